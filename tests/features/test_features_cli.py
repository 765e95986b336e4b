"""`interp features ...` end to end on the tiny Llama: train, eval, convert, index, show, search,
compare, trace; and bad input refused with one line, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest
from cli_helpers import error_line

from interp.cli import main

TRAIN = ["--site", "mlp", "--d-sae", "48", "--k", "4", "--corpus", "kjv", "--tokens", "3000", "--seq-len", "32",
         "--batch-tokens", "512", "--checkpoint-every", "2"]



@pytest.fixture(scope="module")
def trained(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fcli") / "dict"
    assert main(["features", "train", "--model", str(tiny_llama_dir), *TRAIN, "--out", str(out)]) == 0
    return out


def test_train_eval_convert(trained, tiny_llama_dir, tmp_path, capsys):
    assert (trained / "dictionary.json").is_file() and not (trained / "checkpoint").exists()
    out = tmp_path / "ev.json"
    assert main(["features", "eval", "--model", str(tiny_llama_dir), "--dict", str(trained), "--corpus", "kjv",
                 "--tokens", "400", "--seq-len", "32", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["layers"]
    assert [r["layer"] for r in rows] == [0, 1] and all(0 <= r["l0"] <= 4 for r in rows)
    assert "all layers spliced at once" in capsys.readouterr().out
    assert main(["features", "convert", "--dict", str(trained), "--out", str(tmp_path / "sl")]) == 0
    assert (tmp_path / "sl" / "blocks.1.mlp.hook_in" / "cfg.json").is_file()
    assert main(["features", "eval", "--model", str(tiny_llama_dir), "--dict", str(tmp_path / "sl"), "--corpus", "kjv",
                 "--tokens", "300", "--seq-len", "32", "--splice", "none", "--no-all", "--out", str(tmp_path / "ev2.json")]) == 0


def test_index_show_search_compare_trace(trained, tiny_llama_dir, tmp_path, capsys):
    common = ["--corpus", "kjv", "--tokens", "600", "--top-k", "5", "--seq-len", "32", "--permutations", "20"]
    assert main(["features", "index", "--model", str(tiny_llama_dir), "--dict", str(trained), *common,
                 "--out", str(tmp_path / "fi")]) == 0
    assert main(["memories", "index", "--model", str(tiny_llama_dir), "--corpus", "kjv", "--tokens", "600",
                 "--top-k", "5", "--seq-len", "32", "--out", str(tmp_path / "ni")]) == 0
    capsys.readouterr()
    assert main(["features", "show", "--index", str(tmp_path / "fi"), "--layer", "1", "--feature", "3",
                 "--dict", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "feature 1:3" in out and "decoder row's top tokens" in out and "most similar features" in out
    assert main(["features", "search", "--index", str(tmp_path / "fi"), "--token", "the"]) == 0
    assert main(["features", "compare", "--features", str(tmp_path / "fi"), "--neurons", str(tmp_path / "ni"),
                 "--json", str(tmp_path / "cmp.json")]) == 1 - 1
    rows = json.loads((tmp_path / "cmp.json").read_text())
    assert [r["layer"] for r in rows] == [0, 1] and "feature_agreement_p" in rows[0] and "neuron_same_last" in rows[0]
    assert main(["features", "trace", "--model", str(tiny_llama_dir), "--dict", str(trained), "--prompt",
                 "In the beginning God created", "--off", "1:0"]) == 0
    out = capsys.readouterr().out
    assert "prediction:" in out and "switched off 1:0" in out


@pytest.mark.parametrize("argv,needle", [
    (["train", "--model", "{model}", "--d-sae", "8", "--k", "9", "--out", "{new}"], "k 9 exceeds the dictionary size 8"),
    (["train", "--model", "{model}", *TRAIN[:-6], "--layers", "7", "--out", "{new}"], "out of range"),
    (["train", "--model", "{model}", "--corpus", "kjv", "--seq-len", "32", "--tokens", "900000000", "--out", "{new}"],
     "holds only"),
    (["train", "--model", "{model}", "--site", "attn", "--out", "{new}"], "unknown site"),
    (["eval", "--model", "{gpt2}", "--dict", "{dict}", "--corpus", "kjv", "--seq-len", "32", "--out", "{new}"], "made for"),
    (["trace", "--model", "{model}", "--dict", "{dict}", "--prompt", "x", "--off", "1-2"], "LAYER:FEATURE"),
    (["show", "--index", "{new}", "--layer", "0", "--feature", "0"], "no memory index"),
    (["convert", "--dict", "{new}", "--out", "{new2}"], "no dictionary"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(argv, needle, trained, tiny_llama_dir, tiny_gpt2_dir, tmp_path, capsys):
    new = tmp_path / "new"
    fill = {"{model}": str(tiny_llama_dir), "{gpt2}": str(tiny_gpt2_dir), "{dict}": str(trained), "{new}": str(new),
            "{new2}": str(tmp_path / "new2")}
    assert main(["features", *[fill.get(a, a) for a in argv]]) == 2
    assert needle in error_line(capsys)
    assert not new.exists() and not (tmp_path / "new2").exists()


def test_eval_says_why_a_layer_has_no_spliced_figures(trained, tiny_llama_dir, tmp_path, capsys):
    """Issue 27: a layer left out of --splice shows "-" for CE recovered and KL, and a legend says why."""
    assert main(["features", "eval", "--model", str(tiny_llama_dir), "--dict", str(trained), "--corpus", "kjv",
                 "--tokens", "300", "--seq-len", "32", "--splice", "1", "--no-all", "--out", str(tmp_path / "ev.json")]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()[:1].isdigit()}
    assert rows["0"][-2:] == ["-", "-"] and "-" not in rows["1"] and "nan" not in out
    assert "  -: not spliced alone (--splice names the layers spliced; this run left these out)" in out


def test_compare_marks_missing_figures_and_says_why(monkeypatch, capsys):
    """A figure an index does not hold prints "-" (not 0.000), with the legend; a full table has no legend."""
    import interp.memories as mi
    from interp.features import memories as fm

    full = {f"{side}_{k}": 0.25 for side in ("feature", "neuron") for k in fm.COMPARED}
    rows = [{"layer": 0, **full}, {"layer": 1, **full, "neuron_same_last": None, "feature_agreement_p": None}]
    monkeypatch.setattr(fm, "open_feature_index", lambda path: None)
    monkeypatch.setattr(mi, "open_index", lambda path: None)
    monkeypatch.setattr(fm, "compare", lambda f, n: rows)
    assert main(["features", "compare", "--features", "f", "--neurons", "n"]) == 0
    lines = capsys.readouterr().out.splitlines()
    layer1 = next(line for line in lines if line.split()[0] == "1")
    assert layer1.split()[-1] == "-" and layer1.split("|")[1].split()[-1] == "-" and "0.000" not in layer1
    assert lines[-1] == "  -: not in that index: it was built before the figure was recorded (build it again to compare)"
    rows.pop()
    assert main(["features", "compare", "--features", "f", "--neurons", "n"]) == 0
    assert "-: not in that index" not in capsys.readouterr().out
