"""AppTests of the Training runs view: runs found in the runs folder (newest first) without typing,
one head pinned across checkpoints, a single run's phase-change window shaded with its rule stated,
byte tokens labelled readably, and a one-line message for each bad input."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from dashboard_helpers import errors, figures, open_app

from interp import dynamics, load
from interp.train.tokens import readable_tokens

PAGE = "views/training.py"
PROMPT = "the café costs 3 €"


def _log(folder, induction, when=None):
    """A metrics-only run: an evaluation every 100 steps with `induction(step)` as its best score."""
    folder.mkdir(parents=True)
    metrics = folder / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 3.0, "eval_loss": 3.1, "icl_score": -0.1,
                                           "repeat_bigram_gap": -1.0, "induction_score": induction(s),
                                           "prev_token_score": 0.1}) + "\n" for s in range(0, 1000, 100)))  # fmt: skip
    if when is not None:
        os.utime(metrics, (when, when))
    return folder


def test_runs_in_the_runs_folder_are_listed_newest_first_and_the_newest_opens(tiny_run, runs_folder, tmp_path):
    _log(runs_folder / "older", lambda s: 0.01, when=1_000_000)
    shutil.copytree(tiny_run, runs_folder / "tiny")  # written now: the newest
    at = open_app("", PROMPT, page=PAGE)
    assert not errors(at), errors(at)
    picker = at.selectbox(key="train_run")
    assert [o.split(" · ")[0] for o in picker.options] == ["tiny", "older"]
    assert picker.options[0].startswith("tiny · step 20 · 2 checkpoints")
    assert any(m.value.startswith("Step **20**") for m in at.markdown)  # opened without typing anything
    picker.set_value(str(runs_folder / "older")).run()
    assert not errors(at) and figures(at)[0]["layout"]["title"]["text"] == "older"
    at.text_input(key="train_dir").input(str(runs_folder)).run()  # the runs folder itself is no run
    assert len(errors(at)) == 1
    assert errors(at)[0].endswith("runs' is a folder of runs, not a run: type one of them (tiny, older)")
    (tmp_path / "empty").mkdir()
    at.text_input(key="train_dir").input(str(tmp_path / "empty")).run()
    assert len(errors(at)) == 1 and "neither metrics.jsonl nor checkpoint-* folders" in errors(at)[0]
    assert "interp train --output_dir" in errors(at)[0]


def test_an_empty_runs_folder_says_how_to_train_a_run(runs_folder):
    runs_folder.mkdir()
    at = open_app("", PROMPT, page=PAGE)
    assert not errors(at) and "train_run" not in [s.key for s in at.selectbox]
    info = " ".join(i.value for i in at.info)
    assert "No training runs under" in info and "interp train --preset attn-only-2l --output_dir" in info
    assert "INTERP_RUNS_DIR" in info


def test_a_pinned_head_is_scored_at_every_checkpoint(tiny_run):
    at = open_app("", PROMPT, page=PAGE, train_dir=str(tiny_run))
    assert not errors(at), errors(at)
    expected = {}
    for step in (10, 20):
        got = dynamics.checkpoint_heads(load(str(tiny_run / f"checkpoint-{step}")))
        expected[step] = got.scores
    best = dynamics.best_head(expected[20]["induction"])
    default = f"L{best[0]}H{best[1]}"
    assert figures(at)[1]["layout"]["title"]["text"] == f"{default} at every checkpoint (probe: repeated random tokens)"
    at.text_input(key="train_pin").input("L1H3").run()
    assert not errors(at), errors(at)
    table = at.dataframe[0].value
    assert list(table["step"]) == [10, 20]
    assert list(table["induction"]) == pytest.approx([round(float(expected[s]["induction"][1, 3]), 3) for s in (10, 20)],
                                                     abs=1e-3)  # fmt: skip
    assert list(table["previous-token"]) == pytest.approx(
        [round(float(expected[s]["previous-token"][1, 3]), 3) for s in (10, 20)], abs=1e-3)
    bests = [dynamics.best_head(expected[s]["induction"]) for s in (10, 20)]
    assert list(table["best induction head"]) == [f"L{b[0]}H{b[1]}" for b in bests]
    fig = figures(at)[1]
    assert fig["layout"]["title"]["text"].startswith("L1H3 at every checkpoint")
    assert list(fig["data"][0]["y"]) == pytest.approx([float(expected[s]["induction"][1, 3]) for s in (10, 20)])
    grid = figures(at)[2]
    assert [a["text"] for a in grid["layout"]["annotations"]] == ["step 10", "step 20"]
    step_text = next(m.value for m in at.markdown if m.value.startswith("Step **20**"))
    assert "pinned **L1H3**" in step_text and f"{float(expected[20]['induction'][1, 3]):.3f}" in step_text
    assert [f["layout"]["title"]["text"] for f in figures(at)[3:]] == ["L1H3 on repeated random tokens", "L1H3 on the prompt"]
    at.select_slider(key="train_step").set_value(10).run()
    assert any(m.value.startswith("Step **10**") and "pinned **L1H3**" in m.value for m in at.markdown)
    at.text_input(key="train_pin").input("L2H0").run()  # the model has 2 layers
    assert errors(at) == [("head L2H0 is out of range: this run's model has 2 layers × 4 heads; pick L0-1 and H0-3; "
                           f"showing {default}, the best induction head, meanwhile")]  # fmt: skip
    assert len(figures(at)) == 5  # the rest of the page stays
    at.text_input(key="train_pin").input("three").run()
    assert len(errors(at)) == 1 and "type layer and head as L1H3, 1.3 or 1,3" in errors(at)[0]


def test_a_single_runs_phase_change_is_shaded_with_its_rule(tmp_path):
    two = _log(tmp_path / "two", lambda s: 0.01 if s < 300 else (0.2 if s < 400 else 0.45))
    at = open_app("", PROMPT, page=PAGE, train_dir=str(two))
    assert not errors(at), errors(at)
    window = dynamics.induction_window([json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()])
    assert window == (300, 400)
    shapes = figures(at)[0]["layout"]["shapes"]
    assert len(shapes) == 5 and {(s["x0"], s["x1"]) for s in shapes} == {window}
    caption = at.caption[0].value
    assert caption.startswith("Shaded: steps 300-400, two's induction phase change: the steps where the best induction")
    assert "first covers 10% and then 90%" in caption
    flat = _log(tmp_path / "flat", lambda s: 0.01)
    at.text_input(key="train_dir").input(str(flat)).run()
    assert not errors(at) and not figures(at)[0]["layout"].get("shapes")
    assert at.caption[0].value.startswith("No phase change shaded: flat's best induction score peaks at 0.010, below 0.2")


@pytest.fixture(scope="module")
def byte_run(tmp_path_factory):
    """A run whose checkpoint reads a byte-level BPE of 300 tokens (most non-ASCII bytes stay unmerged)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from interp.models.inhouse import NativeSpec, build_native, save_inhouse

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the cat sat on the mat", "the costs of the cat"] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")  # fmt: skip
    folder = tmp_path_factory.mktemp("byte-bpe")
    fast.save_pretrained(str(folder))  # TransformerLens re-opens a tokenizer from its folder
    fast = AutoTokenizer.from_pretrained(str(folder))
    run = tmp_path_factory.mktemp("byte-runs") / "bytes"
    spec = NativeSpec(n_layers=1, d_model=16, n_heads=2, d_head=8, n_ctx=48, d_vocab=len(fast), attn_only=True)
    save_inhouse(build_native(spec, fast), spec, run / "checkpoint-5")
    return run


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    if hasattr(value, "tolist"):
        return _strings(value.tolist())
    return []


def test_byte_tokens_are_labelled_readably(byte_run):
    model = load(str(byte_run / "checkpoint-5"))
    ids = model.to_tokens(PROMPT)[0]
    assert "\ufffd" in "".join(model.to_str_tokens(ids))  # what the view showed before
    at = open_app("", PROMPT, page=PAGE, train_dir=str(byte_run))
    assert not errors(at), errors(at)
    text = [s for f in figures(at) for s in _strings(f)]
    assert not any("\ufffd" in s for s in text)
    prompt_fig = next(f for f in figures(at) if f["layout"]["title"]["text"].endswith("on the prompt"))
    labels = readable_tokens(model.tokenizer, ids)
    assert {"<0xE2>", "<0x82>", "<0xAC>"} <= set(labels) and labels[0] == "<|endoftext|>"  # the euro sign's bytes
    assert {"<0xE2>", "<0x82>", "<0xAC>"} <= set(prompt_fig["layout"]["xaxis"]["ticktext"])
    probe = dynamics.checkpoint_heads(model).labels
    assert any(label.startswith("<0x") for label in probe[1:])  # the probe draws bare bytes too
    probe_fig = next(f for f in figures(at) if f["layout"]["title"]["text"].endswith("on repeated random tokens"))
    assert {"<0x" in t for t in probe_fig["layout"]["xaxis"]["ticktext"]} == {"<0x" in t for t in probe}
    grid = next(f for f in figures(at) if "at each checkpoint (rows" in f["layout"]["title"]["text"])
    assert [c[1].split(": ", 1)[1] for c in grid["data"][0]["customdata"][0]] == probe
