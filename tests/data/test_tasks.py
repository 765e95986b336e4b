"""Tasks as data: the built-ins, task files and their bad input, the metrics on hand-made logits."""

from __future__ import annotations

import json

import pytest
import torch

from interp.data.ioi import BASE_TEMPLATES, make_ioi
from interp.data.tasks import Task, load_task, metric_fn
from interp.errors import WorkbenchError


def _same_length_pairs(task: Task) -> None:
    assert task.clean.shape == task.corrupted.shape
    for i in range(len(task)):
        e = int(task.end[i])
        assert (task.clean[i, e + 1 :] == task.clean[i, e]).all()  # padded by repeating the last token
        assert (task.corrupted[i, e + 1 :] == task.corrupted[i, e]).all()


def test_ioi_task_holds_the_dataset_and_held_out_templates_differ(tiny_llama):
    split = load_task("ioi", tiny_llama, 6, 5, seed=3)
    assert (len(split.score), len(split.heldout)) == (6, 5)
    for t in (split.score, split.heldout):
        _same_length_pairs(t)
        assert t.metric == "logit-diff" and set(t.positions) == {"IO", "S1", "S1+1", "S2", "END"}
        rows = torch.arange(len(t))
        assert (t.clean.cpu()[rows, t.positions["IO"]] == t.answers).all()
        assert (t.clean.cpu()[rows, t.positions["S2"]] == t.distractors).all()
    # the one IOI split: scoring prompts from the discovery part, held-out ones from the evaluation part
    # (other templates and other names), both drawn with the seed
    from interp.data.ioi import NAMES

    assert split.score.prompts == make_ioi(tiny_llama, 6, seed=3, part="discovery", corruption="s2-io").prompts
    assert split.heldout.prompts == make_ioi(tiny_llama, 5, seed=3, part="evaluation", corruption="s2-io").prompts
    assert split.score.source["templates"] == BASE_TEMPLATES[0::2] and split.heldout.source["templates"] == BASE_TEMPLATES[1::2]
    assert not set(split.score.source["names"]) & set(split.heldout.source["names"])
    assert set(split.score.source["names"]) <= set(NAMES[0::2])
    ds = make_ioi(tiny_llama, 3, seed=0)
    assert torch.equal(ds.end, ds.positions["END"]) and ds.metric == "logit-diff" and ds.corruption == "abc"
    sub = ds.subset([2, 0])
    assert sub.prompts == [ds.prompts[2], ds.prompts[0]] and sub.clean.shape[1] == int(ds.lengths[[2, 0]].max())
    assert sub.groups.tolist() == ds.groups[[2, 0]].tolist() and sub.source == ds.source


def test_greater_than_with_two_digit_year_tokens(tiny_gpt2):
    split = load_task("greater-than", tiny_gpt2, 8, 4, seed=1)
    t = split.score
    tok = tiny_gpt2.tokenizer
    assert t.metric == "prob-diff" and len(t.candidates) == 100
    for i in range(len(t)):
        _same_length_pairs(t)
        yy = tok.decode([int(t.clean[i, int(t.positions["YY"][i])])])
        assert tok.decode([int(t.corrupted[i, int(t.positions["YY"][i])])]) == "01"
        side = t.sides[i]
        assert (side[int(yy) + 1 :] == 1).all() and (side[: int(yy) + 1] == -1).all()
    nouns = lambda s: {p.split()[1] for p in s.prompts}  # noqa: E731
    assert not nouns(split.score) & nouns(split.heldout)


@pytest.mark.slow
def test_greater_than_with_single_digits(smollm2):
    """SmolLM2 splits numbers into digits: the whole year is read at two positions, the start year's
    tens digit fed at END (teacher forcing); tests/circuits/test_greater_than_year.py checks the metric."""
    t = load_task("greater-than", smollm2, 6, 2, seed=0).score
    tok = smollm2.tokenizer
    assert len(t.candidates) == 10 and [tok.decode([int(c)]) for c in t.candidates] == list("0123456789")
    assert t.metric == "prob-diff-year" and torch.equal(t.reads, torch.stack([t.end - 1, t.end], -1))
    for i in range(len(t)):
        p = int(t.positions["YY"][i])
        tens = int(tok.decode([int(t.clean[i, p])]))
        units = int(tok.decode([int(t.clean[i, p + 1])]))
        assert tok.decode([int(t.corrupted[i, p])]) == "0" and 1 <= tens <= 8
        assert t.sides[i].tolist() == [1 if d > tens else (-1 if d < tens else 0) for d in range(10)]
        assert t.next_sides[i].tolist() == [1 if d > units else -1 for d in range(10)]
        e = int(t.end[i])
        assert tok.decode([int(t.clean[i, e])]) == str(tens) == t.prompts[i][-1]  # END: the tens digit, fed
        assert tok.decode([int(t.clean[i, e - 1])]) == t.prompts[i][-2]  # TENS: the century's last digit


def test_induction_task(tiny_llama):
    t = load_task("induction", tiny_llama, 4, 2, seed=0).score
    n = int(t.positions["next"][0])
    for i in range(len(t)):
        row, bad = t.clean[i].tolist(), t.corrupted[i].tolist()
        assert row[int(t.positions["prev"][i])] == row[-1]  # END's token earlier in the sequence
        assert row[n] == int(t.answers[i])  # ... and the token that followed it: the answer
        assert bad[n + 1 :] == row[n + 1 :] and bad[1 : n + 1] != row[1 : n + 1]  # first half resampled
    assert t.metric == "logit" and t.distractors is None


def _write(tmp_path, rows, name="pairs.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


GOOD = [{"clean": "When Mary and John went to the store, John gave a drink to",
         "corrupted": "When Alice and Bob went to the store, Tom gave a drink to", "answer": " Mary", "distractor": " John"},
        {"clean": "Then, Sarah and Paul walked home. Paul gave a book to",
         "corrupted": "Then, Laura and Peter walked home. Mark gave a book to", "answer": " Sarah", "distractor": " Paul"},
        {"clean": "After Tom and Kate ate lunch, Kate handed a pen to",
         "corrupted": "After Mike and Anna ate lunch, Jack handed a pen to", "answer": " Tom", "distractor": " Kate"}]  # fmt: skip


def test_task_file(tmp_path, tiny_gpt2):
    split = load_task(str(_write(tmp_path, GOOD)), tiny_gpt2, n_prompts=2, n_heldout=1, seed=0)
    assert split.name == "pairs" and (len(split.score), len(split.heldout)) == (2, 1)
    every = split.score.prompts + split.heldout.prompts
    assert sorted(every) == sorted(r["clean"] for r in GOOD)
    t = split.score
    for i, p in enumerate(t.prompts):
        row = next(r for r in GOOD if r["clean"] == p)
        assert int(t.answers[i]) == tiny_gpt2.token_id(row["answer"]) and t.metric == "logit-diff"
    no_distractor = [{k: v for k, v in r.items() if k != "distractor"} for r in GOOD]
    assert load_task(str(_write(tmp_path, no_distractor, "nd.jsonl")), tiny_gpt2).score.metric == "logit"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([GOOD[0], {**GOOD[1], "corrupted": "Then, Laura left. Mark gave a book to"}], "line 2: the clean prompt is"),
        ([GOOD[0], {**GOOD[1], "answer": " Sarah Jane"}], "line 2: the answer ' Sarah Jane' is 2 tokens"),
        ([GOOD[0], "{not json"], "line 2 is not JSON"),
        ([GOOD[0], {"clean": "x", "answer": " a"}], 'line 2 needs non-empty strings'),
        ([GOOD[0]], "needs at least 2"),
        ([GOOD[0], {k: v for k, v in GOOD[1].items() if k != "distractor"}], "1 of 2 rows have a distractor"),
        ([GOOD[0], {**{k: v for k, v in GOOD[1].items() if k != "distractor"}, "Distractor": " Paul"}],
         'line 2 has the key "Distractor".*rename it "distractor"'),
        ([GOOD[0], {**GOOD[1], "template": 3}], 'line 2 has the key "template".*move it under "meta"'),
        ([GOOD[0], {**GOOD[1], "corrupted": GOOD[1]["clean"]}], "line 2: the corrupted prompt is the clean one"),
        ([GOOD[0], {**GOOD[1], "distractor": " Sarah"}], "line 2: the distractor is the answer"),
        ([GOOD[0], GOOD[1], GOOD[0]], "line 3 repeats line 1"),
    ],
    ids=["lengths", "multi-token", "json", "fields", "one-row", "mixed", "Distractor", "unknown-key", "identical",
         "answer-distractor", "repeat"],
)  # fmt: skip
def test_bad_task_files(tmp_path, tiny_gpt2, rows, message):
    with pytest.raises(WorkbenchError, match=message.replace("(", r"\(")):
        load_task(str(_write(tmp_path, rows)), tiny_gpt2)


def test_bad_specs_and_shallow_models(tiny_gpt2, tmp_path):
    with pytest.raises(WorkbenchError, match="unknown task 'nope'"):
        load_task("nope", tiny_gpt2)
    with pytest.raises(WorkbenchError, match="no task file"):
        load_task(str(tmp_path / "missing.jsonl"), tiny_gpt2)
    with pytest.raises(WorkbenchError, match="unknown metric"):
        load_task("ioi", tiny_gpt2, 2, 2, metric="accuracy")
    with pytest.raises(WorkbenchError, match="no distractor"):
        load_task("induction", tiny_gpt2, 2, 2, metric="logit-diff")
    from interp.models.inhouse import NativeSpec, build_native
    from interp.models.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    one = build_native(NativeSpec(n_layers=1, d_model=32, n_heads=4, n_kv_heads=4, d_head=8, d_mlp=64, n_ctx=64,
                                  d_vocab=len(tok)), tok)  # fmt: skip
    with pytest.raises(WorkbenchError, match="1 layer.*induction task needs at least 2.*deeper model"):
        load_task("induction", one)
    assert len(load_task("greater-than", one, 2, 2).score) == 2  # one layer is enough for greater-than


def test_metrics_on_hand_made_logits():
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0], [0.0, 3.0, 0.0, 0.0]])  # [batch vocab]
    t = Task("t", torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), torch.tensor([2, 2]),
             torch.tensor([0, 1]), torch.tensor([2, 0]), "logit-diff", candidates=torch.tensor([0, 1, 2, 3]),
             sides=torch.tensor([[1, 1, -1, 0], [-1, 1, 0, 0]]))  # fmt: skip
    assert metric_fn(t)(logits).tolist() == [1.0, 3.0]
    assert metric_fn(t.with_metric("logit"))(logits).tolist() == [2.0, 3.0]
    p = logits.softmax(-1)
    assert torch.allclose(metric_fn(t.with_metric("prob"))(logits), torch.stack([p[0, 0], p[1, 1]]))
    assert torch.allclose(metric_fn(t.with_metric("prob-diff"))(logits), torch.stack([p[0, 0] + p[0, 1] - p[0, 2], p[1, 1] - p[1, 0]]))
    kl = metric_fn(t.with_metric("kl"), clean_end=logits)
    assert torch.allclose(kl(logits), torch.zeros(2), atol=1e-7)
    other = torch.zeros(2, 4)
    ref = (p * (p.log() - other.log_softmax(-1))).sum(-1)
    assert torch.allclose(kl(other), -ref)
    # leading variant axes broadcast
    assert metric_fn(t)(logits.expand(3, 2, 4)).shape == (3, 2)
    with pytest.raises(WorkbenchError, match="differ in shape"):
        Task("t", torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long), torch.tensor([2, 2]),
             torch.tensor([0, 1]), None, "logit")  # fmt: skip


def test_file_checks_need_no_model_and_meta_is_kept_out(tmp_path):
    """read_rows is what the CLI and the dashboard run before loading a model; "meta" holds a
    user's own data; the held-out minimum is the front ends' (an interval needs 2 prompts)."""
    from interp.data.tasks import MIN_HELDOUT, read_rows

    rows = [{**r, "meta": {"id": i}} for i, r in enumerate(GOOD)]
    assert [no for no, _ in read_rows(_write(tmp_path, rows))] == [1, 2, 3]
    with pytest.raises(WorkbenchError, match="has 2 pairs, which leaves 1 held out; a 95% interval needs at least 2"):
        read_rows(_write(tmp_path, rows[:2]), min_heldout=MIN_HELDOUT)
    with pytest.raises(WorkbenchError, match="leaves 1 held out"):
        read_rows(_write(tmp_path, rows), n_prompts=2, min_heldout=MIN_HELDOUT)
    assert len(read_rows(_write(tmp_path, rows), min_heldout=MIN_HELDOUT)) == 3  # 1 scoring, 2 held out
