"""Indirect Object Identification prompts (Wang et al. 2022), for any tokenizer.

A prompt names two people, repeats one of them (the subject S) and asks the model to complete
with the other (the indirect object IO): "Then, Mary and John went to the store. John gave a
drink to" -> " Mary". Each template comes in both orders (ABBA: IO first, BABA: S first).
The corrupted distribution (ABC) fills the same template with three unrelated names.

`make_ioi` returns an `interp.data.task.Task` (clean = IOI, corrupted as `corruption` says,
answer = IO, distractor = S, metric logit(IO) - logit(S)) with the named positions IO, S1, S1+1, S2
and END, each prompt's expanded template in `groups`, and in `source` the base templates, names,
part and seed it was drawn from (what drawing more prompts like them needs: the ABC means of
interp.circuits.evaluate). Positions are found in each tokenized prompt (never assumed from the
template), prompts are right-padded, and `positions["END"]` holds each prompt's own last index.
Right padding is safe for a causal model: no real position ever attends to a pad.

Held out means held out: `make_ioi(..., part="discovery")` and `part="evaluation"` draw from
disjoint halves of the base templates and of the names (`PARTS`: the even-indexed entries of
each list go to discovery, the odd-indexed ones to evaluation, split before the names are
filtered to one token, so the split is the same for every tokenizer). A circuit found on the
discovery part is then evaluated on sentences and names it never saw. Places and objects are
shared by both parts. `ioi_split` draws one task of each part: the one split rule, used by
`interp ioi`, `interp circuit --task ioi` and the dashboard.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch

from interp.data.task import MIN_LAYERS, Task, TaskSplit
from interp.errors import WorkbenchError
from interp.types import CORRUPTIONS, check_mode

if TYPE_CHECKING:
    from interp.models import Model

# [X] and [Y] are the two names introduced; [S] repeats the subject. ABBA: X=IO, Y=S; BABA: X=S, Y=IO.
BASE_TEMPLATES: list[str] = [
    "Then, [X] and [Y] went to the [PLACE]. [S] gave a [OBJECT] to",
    "Then, [X] and [Y] had a lot of fun at the [PLACE]. [S] gave a [OBJECT] to",
    "Then, [X] and [Y] were working at the [PLACE]. [S] decided to give a [OBJECT] to",
    "Then, [X] and [Y] were thinking about going to the [PLACE]. [S] wanted to give a [OBJECT] to",
    "Then, [X] and [Y] had a long argument, and afterwards [S] said to",
    "After [X] and [Y] went to the [PLACE], [S] gave a [OBJECT] to",
    "When [X] and [Y] got a [OBJECT] at the [PLACE], [S] decided to give it to",
    "When [X] and [Y] got a [OBJECT] at the [PLACE], [S] decided to give the [OBJECT] to",
    "While [X] and [Y] were working at the [PLACE], [S] gave a [OBJECT] to",
    "While [X] and [Y] were commuting to the [PLACE], [S] gave a [OBJECT] to",
    "After the lunch, [X] and [Y] went to the [PLACE]. [S] gave a [OBJECT] to",
    "Afterwards, [X] and [Y] went to the [PLACE]. [S] gave a [OBJECT] to",
    "Then, [X] and [Y] had a long argument. Afterwards [S] said to",
    "The [PLACE] [X] and [Y] went to had a [OBJECT]. [S] gave it to",
    "Friends [X] and [Y] found a [OBJECT] at the [PLACE]. [S] gave it to",
    "Yesterday, [X] and [Y] walked to the [PLACE]. [S] handed a [OBJECT] to",
]

NAMES: list[str] = (
    "Mary John Tom James Dan Sid Martin Amy Paul Kate Sarah Mike Lisa Anna David Laura Mark Emma Chris Jane "
    "Peter Susan Jack Alice Brian Helen Kevin Ruth George Rose Adam Grace Frank Nancy Steve Linda Robert Karen "
    "Eric Diana Joe Julia Ben Anne Sam Claire Tim Lucy Max Jessica Ryan Emily Andrew Rachel Jason Victoria"
).split()
PLACES: list[str] = (
    "store garden restaurant school hospital office house station park market beach library church museum "
    "cafe bank farm hotel lake river"
).split()
OBJECTS: list[str] = (
    "ring kiss bone basketball computer necklace drink snack apple book letter key ball gift pen cake hat "
    "box card flower"
).split()

POSITION_NAMES = ("IO", "S1", "S1+1", "S2", "END")
# the corrupted prompt of each pair (see `make_ioi`; `CORRUPTIONS`, from interp.types): "abc" three
# unrelated names (Wang et al.'s ABC); "s2-io" the second S replaced by IO, so the answer flips to S
# (MIB's IOI counterfactual, `s2_io_flip`); "new-s" both S replaced by one unrelated name (IO kept)
PARTS = ("discovery", "evaluation")  # disjoint halves of templates and names (see the module docstring)
# the discovery half split again, the same way, for choosing settings (e.g. discovery's threshold):
# "search" finds a circuit, "validation" judges it; neither touches the evaluation half
SUBPARTS = {"search": ("discovery", 0), "validation": ("discovery", 1)}
__all__ = ["BASE_TEMPLATES", "CORRUPTIONS", "NAMES", "PARTS", "POSITION_NAMES", "SUBPARTS", "ioi_split", "make_ioi", "templates_used"]


def check_corruption(corruption: str) -> str:
    """Refuse a corruption that is not one of `CORRUPTIONS`."""
    return check_mode("IOI corruption", corruption)


def part_of(words: list[str], part: str | None) -> list[str]:
    """The half of `words` that belongs to `part` (even indices: discovery, odd: evaluation), or the
    quarter of a sub-part (`SUBPARTS`: the discovery half's even entries are "search", its odd ones
    "validation")."""
    if part is None:
        return list(words)
    if part in SUBPARTS:
        parent, i = SUBPARTS[part]
        return part_of(words, parent)[i::2]
    if part not in PARTS:
        raise WorkbenchError(f"unknown IOI part {part!r}; choose one of {', '.join(PARTS + tuple(SUBPARTS))}")
    return list(words[PARTS.index(part) :: 2])


def expand_templates(base: list[str]) -> list[str]:
    """Each base template in ABBA order ([A]=IO first) and BABA order ([B]=S first)."""
    out = []
    for t in base:
        for tag in ("[X]", "[Y]", "[S]"):
            if t.count(tag) != 1:
                raise WorkbenchError(f"IOI template {t!r} must contain {tag} exactly once")
        if t.startswith("[X]"):
            raise WorkbenchError(f"IOI template {t!r} starts with a name; start with a word so names carry a space")
        out.append(t.replace("[X]", "[A]").replace("[Y]", "[B]").replace("[S]", "[B]"))  # ABBA
        out.append(t.replace("[X]", "[B]").replace("[Y]", "[A]").replace("[S]", "[B]"))  # BABA
    return out


def single_token_words(tokenizer, words: list[str], strict: bool, what: str) -> list[str]:
    """Words that are one token with a leading space; with strict=True any other word is an error."""
    keep = []
    for w in words:
        ids = tokenizer.encode(" " + w, add_special_tokens=False)
        if len(ids) == 1:
            keep.append(w)
        elif strict:
            raise WorkbenchError(
                f"IOI {what} {w!r} is {len(ids)} tokens in this tokenizer; use {what}s that are one token (' {w}')"
            )
    return keep


def _fill(template: str, a: str, b: str, place: str, obj: str) -> str:
    return template.replace("[A]", a).replace("[B]", b).replace("[PLACE]", place).replace("[OBJECT]", obj)


def _find(ids: list[int], token: int, count: int, prompt: str) -> list[int]:
    where = [i for i, t in enumerate(ids) if t == token]
    if len(where) != count:
        raise WorkbenchError(f"IOI prompt {prompt!r}: a name tokenizes differently in context; drop that template")
    return where


def make_ioi(
    model: Model,
    n_prompts: int,
    seed: int = 0,
    templates: list[str] | None = None,
    names: list[str] | None = None,
    places: list[str] | None = None,
    objects: list[str] | None = None,
    template_ids: list[int] | None = None,
    part: str | None = None,
    corruption: str = "abc",
) -> Task:
    """`n_prompts` IOI prompts (half ABBA, half BABA, templates cycled) with their corruptions, as a Task.

    Default names/places/objects are filtered to those that are one token in `model`'s
    tokenizer; lists you pass must be one token each (else a WorkbenchError names the word).
    `part` ("discovery" / "evaluation") keeps only that half of the templates and names (given
    or default), so the two parts share neither. `template_ids` (one per prompt) picks the
    expanded template (of the part's templates) of each prompt instead of cycling them.
    `corruption` (`CORRUPTIONS`) picks the corrupted prompt; the clean prompts are the same for
    every choice (the same draws from `seed`)."""
    check_corruption(corruption)
    if n_prompts < 1:
        raise WorkbenchError(f"n_prompts must be at least 1 (got {n_prompts})")
    tok = model.tokenizer
    strict_names = names is not None
    templates = part_of(templates or BASE_TEMPLATES, part)
    names = part_of(names or NAMES, part)
    names = single_token_words(tok, names, strict=strict_names, what="name")
    places = single_token_words(tok, places or PLACES, strict=places is not None, what="place")
    objects = single_token_words(tok, objects or OBJECTS, strict=objects is not None, what="object")
    if len(names) < 5 or not places or not objects or not templates:
        half = f" in the {part} half" if part else ""
        raise WorkbenchError(
            f"only {len(names)} names, {len(places)} places, {len(objects)} objects, {len(templates)} templates{half} "
            "are usable in this tokenizer; pass lists of one-token words (at least 5 names) and templates"
        )
    expanded = expand_templates(templates)
    rng = random.Random(seed)
    order = list(range(len(expanded)))
    rng.shuffle(order)
    rows = []
    if template_ids is not None and (
        len(template_ids) != n_prompts or not all(0 <= t < len(expanded) for t in template_ids)
    ):
        raise WorkbenchError(f"template_ids needs {n_prompts} indices in 0..{len(expanded) - 1}")
    for i in range(n_prompts):
        t = order[i % len(order)] if template_ids is None else template_ids[i]
        io, s, c1, c2, c3 = rng.sample(names, 5)
        place, obj = rng.choice(places), rng.choice(objects)
        rows.append((t, io, s, (c1, c2, c3), place, obj))
    source = {"generator": "ioi", "templates": list(templates), "names": list(names), "part": part, "seed": seed}
    return _tokenize(model, expanded, rows, corruption, source)


def _tokenize(model: Model, expanded: list[str], rows, corruption: str, source: dict) -> Task:
    tok = model.tokenizer
    clean_ids, corr_ids, prompts, corr_prompts = [], [], [], []
    pos = {k: [] for k in POSITION_NAMES}
    io_ids, s_ids, tids = [], [], []
    for t, io, s, (c1, c2, c3), place, obj in rows:
        template = expanded[t]
        text = _fill(template, io, s, place, obj)
        if corruption == "abc":  # the name slots, in textual order, get c1, c2, c3 (three unrelated names)
            abc = _fill_abc(template, c1, c2, c3, place, obj)
        else:  # by role: [A] is IO, the first [B] S1, the second S2
            io_, s1_, s2_ = (io, s, io) if corruption == "s2-io" else (io, c1, c1)
            abc = _fill_roles(template, io_, s1_, s2_, place, obj)
        ids = model.to_tokens(text)[0].tolist()
        cids = model.to_tokens(abc)[0].tolist()
        io_id = tok.encode(" " + io, add_special_tokens=False)[0]
        s_id = tok.encode(" " + s, add_special_tokens=False)[0]
        (io_pos,) = _find(ids, io_id, 1, text)
        s1, s2 = _find(ids, s_id, 2, text)
        if len(cids) != len(ids):
            raise WorkbenchError(
                f"IOI prompt {abc!r} tokenizes to a different length than {text!r}; drop that template"
            )
        for k, v in zip(POSITION_NAMES, (io_pos, s1, s1 + 1, s2, len(ids) - 1)):
            pos[k].append(v)
        clean_ids.append(ids)
        corr_ids.append(cids)
        prompts.append(text)
        corr_prompts.append(abc)
        io_ids.append(io_id)
        s_ids.append(s_id)
        tids.append(t)
    width = max(len(x) for x in clean_ids)
    # pad by repeating each prompt's last token: any ordinary token works after END, and this
    # never collides with BOS/pad ids that a bridge might turn into an attention mask
    pad = lambda x: x + [x[-1]] * (width - len(x))  # noqa: E731
    device = model.device
    positions = {k: torch.tensor(v) for k, v in pos.items()}
    return Task("ioi", torch.tensor([pad(x) for x in clean_ids], device=device),
                torch.tensor([pad(x) for x in corr_ids], device=device), positions["END"].clone(), torch.tensor(io_ids),
                torch.tensor(s_ids), "logit-diff", positions, prompts, corr_prompts, min_layers=MIN_LAYERS["ioi"],
                corruption=corruption, groups=torch.tensor(tids), source={**source, "expanded": expanded})  # fmt: skip


def _fill_abc(template: str, c1: str, c2: str, c3: str, place: str, obj: str) -> str:
    """The template with its three name slots (two [B]s and one [A]) filled by c1, c2, c3 in order."""
    out, names = template, [c1, c2, c3]
    for name in names:
        a, b = out.find("[A]"), out.find("[B]")
        first = min(x for x in (a, b) if x >= 0)
        out = out[:first] + name + out[first + 3 :]
    return out.replace("[PLACE]", place).replace("[OBJECT]", obj)


def _fill_roles(template: str, io: str, s1: str, s2: str, place: str, obj: str) -> str:
    """The template with IO's slot [A], S1's (the first [B]) and S2's (the second [B]) filled."""
    out = template.replace("[A]", io).replace("[B]", s1, 1).replace("[B]", s2, 1)
    return out.replace("[PLACE]", place).replace("[OBJECT]", obj)


def ioi_split(model: Model, n_prompts: int, n_heldout: int, seed: int = 0, corruption: str = "abc",
              heldout_corruption: str | None = None, validation: bool = False) -> TaskSplit:  # fmt: skip
    """The one IOI split: `n_prompts` prompts of the discovery part (what a circuit is found or scored
    on) and `n_heldout` of the evaluation part (other templates, other names: what it is judged on),
    both drawn with `seed`. `corruption` makes the first part's corrupted prompts and
    `heldout_corruption` (default: the same) the second's. With validation=True both come from the
    discovery part instead ("search" and "validation", `SUBPARTS`): for choosing settings without
    looking at the evaluation part."""
    heldout_corruption = corruption if heldout_corruption is None else heldout_corruption
    first, second = ("search", "validation") if validation else PARTS
    return TaskSplit(make_ioi(model, n_prompts, seed=seed, part=first, corruption=corruption),
                     make_ioi(model, n_heldout, seed=seed, part=second, corruption=heldout_corruption))  # fmt: skip


def templates_used(task: Task) -> list[str]:
    """The base templates an IOI task's prompts were drawn from (its `groups` are expanded templates:
    two per base template, ABBA and BABA)."""
    base = task.source.get("templates", [])
    return [base[b] for b in sorted({int(t) // 2 for t in task.groups})] if base and task.groups is not None else []
