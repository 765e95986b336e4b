"""`interp heads` end to end on a tiny model, and its bad-input cases (exit code 2)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from interp.cli import main
from interp.commands.heads import render
from interp.heads import FindConfig, heads_report

SMALL = ["--seqs", "2", "--seg-len", "8", "--top", "2", "--device", "cpu"]


def test_json_validate_out_and_plot(tiny_gpt2_dir, tmp_path):
    out, plot = tmp_path / "heads.json", tmp_path / "heads.html"
    code = main(["heads", "--model", str(tiny_gpt2_dir), *SMALL, "--validate", "--format", "json",
                 "--out", str(out), "--plot", str(plot)])
    assert code == 0
    got = json.loads(out.read_text())
    assert got["measure"] == "target" and "rows that have one" in got["measure_means"]
    assert got["validate_seqs"] == 8 and got["ov_tokens"] >= 2 and got["target_rows"]["previous-token"] == 2 * 16
    rows = got["heads"]
    assert len(rows) == 3 * 2 and {r["kind"] for r in rows} == {"previous-token", "duplicate-token", "induction"}
    for r in rows:
        assert {"layer", "head", "kind", "score", "causal_effect", "causal_effect_lo", "causal_effect_hi"} <= set(r)
        assert 0 <= r["layer"] < 2 and 0 <= r["head"] < 4 and isinstance(r["causal_effect"], float)
        assert r["causal_effect_lo"] <= r["causal_effect"] <= r["causal_effect_hi"]
    assert all("ov_copying" in r for r in rows if r["kind"] == "induction")
    html = plot.read_text()
    assert "plotly" in html.lower() and "induction" in html and "score (target)" in html


def test_text_mode_csv_to_stdout(tiny_gpt2_dir, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat and the cat sat on the mat")
    code = main(["heads", "--model", str(tiny_gpt2_dir), "--text", str(text), "--kind", "induction,previous-token",
                 "--top", "3", "--format", "csv"])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["kind"] for r in rows] == ["induction"] * 3 + ["previous-token"] * 3
    assert "causal_effect" not in rows[0] and {r["measure"] for r in rows} == {"target"}


def test_measure_option_reaches_the_scores(tiny_gpt2_dir, tmp_path):
    """--measure tl-mul gives TL's scores: on BOS + 2 x 8 tokens an induction score is at most 8/17."""
    scores = {}
    for measure in ("target", "tl-mul"):
        out = tmp_path / f"{measure}.json"
        assert main(["heads", "--model", str(tiny_gpt2_dir), *SMALL, "--kind", "induction", "--measure", measure,
                     "--format", "json", "--out", str(out)]) == 0
        got = json.loads(out.read_text())
        assert got["measure"] == measure
        scores[measure] = [r["score"] for r in got["heads"]]
    assert max(scores["tl-mul"]) <= 8 / 17 + 1e-6
    assert scores["target"][0] == pytest.approx(scores["tl-mul"][0] * 17 / 8, rel=1e-4)  # same head, rescaled


def test_table_is_readable(planted):
    report = heads_report(planted, top=1, validate=True, config=FindConfig(n_seqs=4, seg_len=10, validate_seqs=4))
    text = render(report, "table")
    assert "L0H0" in text and "L1H0" in text and "confirmed" in text
    assert "mean attention on the target" in text and "95%" in text
    assert max(len(line) for line in text.splitlines() if not line.startswith(("score:", "copy z", "Δloss"))) < 100


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--kind", "induction,bogus"], "unknown head kind 'bogus'"),
        (["--top", "0"], "heads to report per kind must be at least 1"),
        (["--seg-len", "1"], "at least 2 tokens"),
        (["--plot", "x.png"], ".html"),
        (["--measure", "bogus"], "unknown score measure 'bogus'"),
    ],
)
def test_bad_options_exit_2_before_loading(extra, message, capsys):
    assert main(["heads", "--model", "smollm2-135m", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_text_and_model(tiny_gpt2_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert main(["heads", "--model", str(tiny_gpt2_dir), "--text", str(empty)]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["heads", "--model", str(tiny_gpt2_dir), "--text", str(tmp_path / "missing.txt")]) == 2
    assert "cannot read" in capsys.readouterr().err
    long = tmp_path / "long.txt"
    long.write_text("word " * 200)  # tiny models read 64 tokens
    assert main(["heads", "--model", str(tiny_gpt2_dir), "--text", str(long)]) == 2
    assert "shorten" in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    assert main(["heads", "--model", str(tmp_path / "broken")]) == 2
    assert main(["heads", "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2
