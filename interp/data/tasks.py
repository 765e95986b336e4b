"""The task sources and the one entry point, `load_task` (the Task type and the metrics are
interp.data.task, re-exported here).

Built-in tasks:
- `ioi`: `interp.data.ioi.ioi_split`, the one IOI split: scoring prompts from the discovery part
  (the even base templates and the even names), held-out prompts from the evaluation part (the odd
  ones), so held-out prompts share neither a template nor a name with the scoring prompts (the rule
  `interp ioi` uses too); metric logit(IO) - logit(S). The corrupted prompt is MIB's IOI
  counterfactual by default (`IOI_CORRUPTION` = "s2-io", MIB's s2_io_flip: the second mention of
  S becomes IO, "... John gave a drink to" -> "... Mary gave a drink to", so the answer flips to
  S and m(empty) is about minus the clean gap); `corruption="abc"` gives Wang et al.'s ABC prompt
  (all three names replaced by unrelated ones, m(empty) about 0), the one path patching uses.
  Scoring and held-out prompts share the corruption: a circuit is judged by the counterfactual it
  was found with (MIB does the same).
- `greater-than` (Hanna, Liu and Variengien 2023): "The {noun} lasted from the year XXYY to the
  year XX", corrupted start year XX01; the metric is P(YY' > YY) - P(YY' <= YY) over the end
  year YY', the whole year, as in the paper. On tokenizers that write years as two 2-digit tokens
  (GPT-2: " 17", "32") YY' is the next token: metric `prob-diff` over the 100 two-digit tokens at
  END (XX in 11..17, YY in 02..98, years whose tokens split otherwise are skipped). On tokenizers
  that split numbers into single digits (SmolLM2) YY' takes two tokens, its tens digit t and its
  units digit u, so the prompt ends with the start year's own tens digit T, fed (teacher forcing:
  "... to the year 17" + "3" for YY = 3U; the corrupted prompt gets the same T): the tens digit is
  predicted at TENS (END - 1, the century's last digit) and the units digit, given T, at END.
  Metric `prob-diff-year` (interp.data.task): sum_{t > T} p(t) - sum_{t < T} p(t) + p(T) (sum_{u > U}
  p(u | T) - sum_{u <= U} p(u | T)), over the ten digit tokens. `--metric prob-diff-tens` scores the
  tens digit alone (p(t > T) - p(t < T) at TENS; T itself counts on neither side), what greater-than
  scored on these tokenizers before. YY is drawn from 10..89 (so the tens digit has both sides and
  both metrics score the same prompts); `answers` is the units digit after U (U + 1; 9 for U = 9),
  what `logit`/`prob` read at END.
- `induction`: BOS + a random segment A (ids as `interp.data.synthetic.token_pool`) + A without
  its last token; the answer is A's last token, predicted at END by copying what followed END's
  token in the first half. Corrupted: the first half resampled (fresh random ids), so nothing
  repeats. Metric: logit of the answer.
- a `.jsonl` file, one pair a line: {"clean": "...", "corrupted": "...", "answer": " Mary",
  "distractor": " John"} (the distractor is optional: without one the metric is the answer's
  logit). Answers are taken as written (mind the leading space) and must be one token. Other keys
  are refused (a misspelt "Distractor" would silently change the metric); put your own data under
  "meta". `read_rows` checks a file without a model, so a front end can refuse it before loading.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from interp.data.task import (  # noqa: F401  (re-exported: the Task type and the metrics)
    BUILTIN,
    METRICS,
    MIN_LAYERS,
    MetricFn,
    Task,
    TaskSplit,
    check_metric,
    end_logits,
    metric_fn,
)
from interp.errors import WorkbenchError

if TYPE_CHECKING:
    from interp.models import Model


# -- IOI --------------------------------------------------------------------------------------------

IOI_CORRUPTION = "s2-io"  # the circuit task's counterfactual: MIB's IOI default (s2_io_flip)


def ioi_task(model: Model, n_prompts: int, n_heldout: int, seed: int = 0, corruption: str = IOI_CORRUPTION,
             heldout_corruption: str | None = None) -> TaskSplit:  # fmt: skip
    """IOI's split (interp.data.ioi.ioi_split); `corruption` (interp.types.CORRUPTIONS) is the scoring
    prompts' corrupted prompt, `heldout_corruption` the held-out ones' (what faithfulness ablates to;
    default: the same, so a circuit is judged by the counterfactual it was found with, as MIB does)."""
    from interp.data.ioi import ioi_split

    return ioi_split(model, n_prompts, n_heldout, seed, corruption, heldout_corruption)


# -- padding ----------------------------------------------------------------------------------------


def _pad(rows: list[list[int]]) -> Tensor:
    """Right-pad by repeating each row's last token (never a pad/BOS id a bridge could mask)."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows], dtype=torch.long)


def _pairs_task(model: Model, name: str, clean: list[str], corrupted: list[str], answers: list[int],
                distractors: list[int] | None, metric: str, extra_positions=None, where=None, **kw) -> Task:
    """Tokenize clean/corrupted texts (BOS first) into a Task; `where(i)` names the row in errors."""
    rows_c, rows_x = [], []
    for i, (a, b) in enumerate(zip(clean, corrupted)):
        at = where(i) if where else f"pair {i}"
        try:
            ta, tb = model.to_tokens(a)[0].tolist(), model.to_tokens(b)[0].tolist()
        except WorkbenchError as e:  # e.g. longer than the model's context: say which row
            raise WorkbenchError(f"{at}: {e}") from None
        if len(ta) != len(tb):
            raise WorkbenchError(
                f"{at}: the clean prompt is {len(ta)} tokens and the corrupted one {len(tb)}; "
                "make each pair tokenize to the same length (patching aligns them position by position)"
            )
        rows_c.append(ta)
        rows_x.append(tb)
    dev = model.device
    end = torch.tensor([len(r) - 1 for r in rows_c])
    positions = {"END": end}
    positions.update(extra_positions or {})
    return Task(name, _pad(rows_c).to(dev), _pad(rows_x).to(dev), end, torch.tensor(answers),
                None if distractors is None else torch.tensor(distractors), metric, positions,
                list(clean), list(corrupted), **kw)  # fmt: skip


# -- greater-than ---------------------------------------------------------------------------------

NOUNS: list[str] = (
    "war expedition siege reign campaign journey project trial strike festival voyage occupation crusade "
    "rebellion dynasty drought famine conflict alliance treaty partnership investigation construction contract "
    "marriage exile apprenticeship mission tour pilgrimage revolt blockade embargo boycott migration epidemic "
    "plague truce negotiation residency"
).split()
GT_TEMPLATE = "The {noun} lasted from the year {xx}{yy:02d} to the year {xx}"


def _year_mode(tok) -> str:
    """'digits' when numbers split into single digits, 'pairs' when a year is ' XX' + 'YY'."""
    ids = tok.encode(" 1732", add_special_tokens=False)
    digits = [tok.encode(str(d), add_special_tokens=False) for d in range(10)]
    if all(len(d) == 1 for d in digits) and len(ids) >= 4 and [tok.decode([i]) for i in ids[-4:]] == list("1732"):
        return "digits"
    if len(ids) == 2 and tok.decode([ids[1]]) == "32" and all(
        len(tok.encode(f"{y:02d}", add_special_tokens=False)) == 1 for y in range(100)
    ):
        return "pairs"
    raise WorkbenchError("this tokenizer writes years neither as single digits nor as two 2-digit tokens; "
                         "greater-than is not defined for it (write your own task file)")  # fmt: skip


def _greater_than(model: Model, n: int, seed: int, nouns: list[str], name: str = "greater-than") -> Task:
    """Greater-than prompts (see the module docstring): one token for the end year on a 2-digit tokenizer,
    its tens digit fed on a digit tokenizer (the whole year read at TENS and END)."""
    tok = model.tokenizer
    mode = _year_mode(tok)
    rng = random.Random(seed)
    if mode == "digits":
        cand = [tok.encode(str(d), add_special_tokens=False)[0] for d in range(10)]
        lo, hi = 10, 89
    else:
        cand = [tok.encode(f"{y:02d}", add_special_tokens=False)[0] for y in range(100)]
        lo, hi = 2, 98
    clean, corrupted, sides, next_sides, yy_pos, tens_pos, answers = [], [], [], [], [], [], []
    tries = 0
    while len(clean) < n:
        tries += 1
        if tries > 100 * n + 1000:
            raise WorkbenchError("could not draw greater-than prompts that tokenize as expected; use a task file")
        noun, xx, yy = rng.choice(nouns), rng.randint(11, 17), rng.randint(lo, hi)
        a = GT_TEMPLATE.format(noun=noun, xx=xx, yy=yy)
        b = GT_TEMPLATE.format(noun=noun, xx=xx, yy=1)
        if mode == "pairs":  # keep years that really split as ' XX' + 'YY'
            want = [tok.encode(f" {xx}", add_special_tokens=False)[0], cand[yy]]
            if tok.encode(f" {xx}{yy:02d}", add_special_tokens=False) != want or tok.encode(
                f" {xx}01", add_special_tokens=False
            ) != want[:1] + [cand[1]]:
                continue
            side = [1 if y > yy else -1 for y in range(100)]
        else:
            t, u = divmod(yy, 10)
            a, b = a + str(t), b + str(t)  # the tens digit fed: the units digit is read after it
            ids = model.to_tokens(a)[0].tolist()
            if ids[-2:] != [cand[xx % 10], cand[t]]:  # the century's last digit, then T, each a token
                continue
            side = [1 if d > t else (-1 if d < t else 0) for d in range(10)]
            next_sides.append([1 if d > u else -1 for d in range(10)])
            tens_pos.append(len(ids) - 2)
        # the start year's YY token (pairs) or its tens digit (digits), from the prompt up to that year
        upto = len(model.to_tokens(a[: a.index(" to the year")])[0])
        clean.append(a)
        corrupted.append(b)
        sides.append(side)
        yy_pos.append(upto - (1 if mode == "pairs" else 2))
        answers.append(cand[yy + 1] if mode == "pairs" else cand[min(yy % 10 + 1, 9)])  # the nearest later value
    positions = {"YY": torch.tensor(yy_pos)}
    year = {}  # digits: the tens digit is predicted at TENS (the century's last digit), the units digit at END
    if mode == "digits":
        positions["TENS"] = torch.tensor(tens_pos)
        year = {"next_sides": torch.tensor(next_sides)}
    return _pairs_task(model, name, clean, corrupted, answers, None, "prob-diff" if mode == "pairs" else "prob-diff-year",
                       extra_positions=positions, candidates=torch.tensor(cand), sides=torch.tensor(sides),
                       min_layers=MIN_LAYERS["greater-than"], **year)  # fmt: skip


def _last_index(ids: list[int], token: int, before: int) -> int:
    where = [i for i, t in enumerate(ids[:before]) if t == token]
    return where[-1] if where else 0


def greater_than_task(model: Model, n_prompts: int, n_heldout: int, seed: int = 0) -> TaskSplit:
    half = len(NOUNS) // 2
    return TaskSplit(_greater_than(model, n_prompts, seed, NOUNS[:half]),
                     _greater_than(model, n_heldout, seed + 1, NOUNS[half:]))  # fmt: skip


# -- induction ------------------------------------------------------------------------------------


def _induction(model: Model, n: int, seg_len: int, seed: int) -> Task:
    from interp.data.synthetic import bos_id, token_pool

    if 2 * seg_len > model.info.n_ctx:
        raise WorkbenchError(f"an induction segment of {seg_len} tokens does not fit {model.info.name}'s context")
    pool = token_pool(model)
    g = torch.Generator().manual_seed(seed)
    first = pool[torch.stack([torch.randperm(len(pool), generator=g)[:seg_len] for _ in range(n)])]
    fresh = pool[torch.stack([torch.randperm(len(pool), generator=g)[:seg_len] for _ in range(n)])]
    bos = torch.full((n, 1), bos_id(model), dtype=torch.long)
    clean = torch.cat([bos, first, first[:, :-1]], 1)
    corrupted = torch.cat([bos, fresh, first[:, :-1]], 1)
    end = torch.full((n,), clean.shape[1] - 1)
    dev = model.device
    return Task("induction", clean.to(dev), corrupted.to(dev), end, first[:, -1].clone(), None, "logit",
                {"END": end, "prev": torch.full((n,), seg_len - 1), "next": torch.full((n,), seg_len)},
                min_layers=MIN_LAYERS["induction"])  # fmt: skip


def induction_task(model: Model, n_prompts: int, n_heldout: int, seed: int = 0, seg_len: int = 10) -> TaskSplit:
    return TaskSplit(_induction(model, n_prompts, seg_len, seed), _induction(model, n_heldout, seg_len, seed + 1))


# -- task files -------------------------------------------------------------------------------------


TASK_KEYS = ("clean", "corrupted", "answer", "distractor")  # what a task file's row may hold ("meta": anything, ignored)
MIN_HELDOUT = 2  # held-out prompts a bootstrap interval needs (one prompt gives a zero-width "interval")


def _unknown_keys(row: dict, where: str) -> None:
    import difflib

    for key in row:
        if key in TASK_KEYS or key == "meta":
            continue
        near = [k for k in TASK_KEYS if k.lower() == str(key).lower()] or difflib.get_close_matches(str(key), TASK_KEYS, 1)
        fix = f'rename it "{near[0]}"' if near else 'drop it or move it under "meta"'
        raise WorkbenchError(f'{where} has the key "{key}", which a task file does not use (keys: {", ".join(TASK_KEYS)}, '
                             f'and "meta" for your own data): {fix}')  # fmt: skip


def read_rows(path: str | Path, n_prompts: int | None = None, n_heldout: int | None = None,
              min_heldout: int = 1) -> list[tuple[int, dict]]:  # fmt: skip
    """The rows of a task file as (line number, row), checked without a model: JSON, known keys,
    non-empty texts, a distractor on every row or none, no row whose corrupted prompt is its clean
    one or whose distractor is its answer (each makes the metric's gap 0), no repeated row (it
    could land on both sides of the split), and enough rows for `n_prompts` scoring and
    `n_heldout` (at least `min_heldout`) held-out prompts."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise WorkbenchError(f"no task file at {str(path)!r}; give a .jsonl file or one of {', '.join(BUILTIN)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkbenchError(f"cannot read task file {str(path)!r} ({type(e).__name__}: {e})") from e
    rows, seen = [], {}
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise WorkbenchError(f"{path.name} line {no} is not JSON ({e.msg}); write one object a line") from None
        if isinstance(row, dict):
            _unknown_keys(row, f"{path.name} line {no}")
        texts = isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("clean", "corrupted", "answer"))
        if not (texts and row["clean"].strip() and row["corrupted"].strip() and row["answer"]):
            raise WorkbenchError(f'{path.name} line {no} needs non-empty strings "clean", "corrupted" and "answer" '
                                 "(prompts of more than spaces)")
        if "distractor" in row and not (isinstance(row["distractor"], str) and row["distractor"]):
            raise WorkbenchError(f'{path.name} line {no}: "distractor" must be a non-empty string (or left out)')
        if row["clean"] == row["corrupted"]:
            raise WorkbenchError(f"{path.name} line {no}: the corrupted prompt is the clean one; a pair must differ "
                                 "where the answer should change")  # fmt: skip
        if row.get("distractor") == row["answer"]:
            raise WorkbenchError(f"{path.name} line {no}: the distractor is the answer ({row['answer']!r}), so the logit "
                                 "difference is 0; give another distractor")  # fmt: skip
        pair = tuple(row.get(k) for k in TASK_KEYS)
        if pair in seen:
            raise WorkbenchError(f"{path.name} line {no} repeats line {seen[pair]}; drop the repeat (a pair on both "
                                 "sides of the split would be scored and held out)")  # fmt: skip
        seen[pair] = no
        rows.append((no, row))
    if len(rows) < 2:
        raise WorkbenchError(f"{path.name} has {len(rows)} pair(s); a task needs at least 2 (some to score, some held out)")
    with_d = sum("distractor" in r for _, r in rows)
    if 0 < with_d < len(rows):
        raise WorkbenchError(f"{path.name}: {with_d} of {len(rows)} rows have a distractor; give every row one or none")
    n_prompts = len(rows) // 2 if n_prompts is None else n_prompts
    n_heldout = len(rows) - n_prompts if n_heldout is None else n_heldout
    if n_prompts < 1 or n_heldout < 1 or n_prompts + n_heldout > len(rows):
        raise WorkbenchError(f"{path.name} has {len(rows)} pairs: cannot take {n_prompts} to score and {n_heldout} held out; "
                             "ask for fewer prompts")  # fmt: skip
    if n_heldout < min_heldout:
        raise WorkbenchError(f"{path.name} has {len(rows)} pairs, which leaves {n_heldout} held out; a 95% interval needs "
                             f"at least {min_heldout} held-out prompts: add pairs or score fewer")  # fmt: skip
    return rows


def read_jsonl(path: str | Path, model: Model, n_prompts: int | None = None, n_heldout: int | None = None,
               seed: int = 0) -> TaskSplit:  # fmt: skip
    """A task from a JSONL file (see the module docstring; `read_rows` checks it): rows shuffled
    with `seed`, the first `n_prompts` for scoring and the next `n_heldout` held out (default:
    half and half)."""
    path = Path(path).expanduser()
    rows = read_rows(path, n_prompts, n_heldout)
    with_d = "distractor" in rows[0][1]
    tok = model.tokenizer

    def one_token(text: str, what: str, no: int) -> int:
        ids = tok.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise WorkbenchError(f"{path.name} line {no}: the {what} {text!r} is {len(ids)} tokens in {model.info.name}'s "
                                 "tokenizer; give a single-token answer (mind the leading space)")  # fmt: skip
        return ids[0]

    answers = [one_token(r["answer"], "answer", no) for no, r in rows]
    distractors = [one_token(r["distractor"], "distractor", no) for no, r in rows] if with_d else None
    for (no, r), a, d in zip(rows, answers, distractors or [None] * len(rows)):
        if a == d:
            raise WorkbenchError(f"{path.name} line {no}: the answer {r['answer']!r} and the distractor {r['distractor']!r} "
                                 f"are one token in {model.info.name}'s tokenizer; give another distractor")  # fmt: skip
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_prompts = len(rows) // 2 if n_prompts is None else n_prompts
    n_heldout = len(rows) - n_prompts if n_heldout is None else n_heldout
    task = _pairs_task(model, path.stem, [r["clean"] for _, r in rows], [r["corrupted"] for _, r in rows], answers,
                       distractors, "logit-diff" if with_d else "logit",
                       where=lambda i: f"{path.name} line {rows[i][0]}")  # fmt: skip
    task = task.subset(order[: n_prompts + n_heldout])
    return TaskSplit(*task.split(n_prompts))


# -- the one entry point ------------------------------------------------------------------------------


DEFAULT_PROMPTS = 32  # scoring prompts of a built-in task when none are asked for


def load_task(spec: str, model: Model, n_prompts: int | None = None, n_heldout: int | None = None, seed: int = 0,
              metric: str | None = None, corruption: str | None = None) -> TaskSplit:  # fmt: skip
    """A built-in task (`BUILTIN`) or a .jsonl file, split into scoring and held-out prompts, with
    its default metric or `metric`. Built-ins draw `n_prompts` (default 32) and `n_heldout`
    (default: as many); a file is split half and half unless told. Checks the model can run it.
    `corruption` (IOI only): how the corrupted prompts are made, on both sides
    (interp.types.CORRUPTIONS; default `IOI_CORRUPTION`, MIB's S2 -> IO; 'abc' is Wang et al.'s)."""
    if corruption is not None and spec != "ioi":
        raise WorkbenchError(f"a choice of corruption is an IOI option; task {spec!r} has its own corrupted prompts")
    if (n_prompts is not None and n_prompts < 1) or (n_heldout is not None and n_heldout < 1):
        raise WorkbenchError(f"a task needs at least 1 scoring and 1 held-out prompt (got {n_prompts}, {n_heldout})")
    if spec in BUILTIN:
        n_prompts = DEFAULT_PROMPTS if n_prompts is None else n_prompts
        n_held = n_prompts if n_heldout is None else n_heldout
        if model.info.n_layers < MIN_LAYERS[spec]:  # refuse before building prompts
            raise WorkbenchError(
                f"{model.info.name} has {model.info.n_layers} layer(s); the {spec} task needs at least "
                f"{MIN_LAYERS[spec]} (a circuit for it composes heads across layers): use a deeper model"
            )
        make = {"ioi": ioi_task, "greater-than": greater_than_task, "induction": induction_task}[spec]
        split = make(model, n_prompts, n_held, seed, **({"corruption": corruption} if corruption else {}))
    elif str(spec).endswith(".jsonl") or Path(spec).expanduser().is_file():
        split = read_jsonl(spec, model, n_prompts, n_heldout, seed)
    else:
        raise WorkbenchError(f"unknown task {spec!r}; choose {', '.join(BUILTIN)} or a .jsonl file of pairs")
    if metric is not None:
        split = TaskSplit(split.score.with_metric(metric), split.heldout.with_metric(metric))
    split.score.check(model)
    split.heldout.check(model)
    return split
