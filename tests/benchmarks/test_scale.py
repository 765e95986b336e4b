"""benchmarks/scale.py end to end on tiny shapes on the CPU (--quick): every workload beside its
baseline, the growth fits, the tables, the EAP-IG slot and the time budget."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import scale  # noqa: E402


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    argv = ["--quick", "--device", "cpu", "--dtype", "fp32", "--growth", "--growth-axes", "length", "--out", str(out / "r.json"),
            "--markdown", str(out / "r.md")]
    assert scale.main(argv) == 0
    return json.loads((out / "r.json").read_text()), (out / "r.md").read_text()


def test_quick_run_times_every_workload_beside_its_baseline(quick):
    results, text = quick
    (row,) = results["rows"]
    assert row["shape"] == "tiny" and row["params"] > 0
    h, m = row["heads"], row["memories"]
    assert h["ours_s"] > 0 and h["cached_forward_s"] > 0 and h["vs_tl"] > 0
    assert h["max_abs_diff_vs_tl"] < 1e-4  # the same numbers as TL's detect_head
    for target in ("logits", "kv@S2"):
        p = row["path"][target]
        assert p["fast_s"] > 0 and p["vs_loop"] > 0 and p["max_abs_diff"] < 1e-4  # fp32: exact
    assert m["index_over_forward"] > 0 and m["tokens"] > 0
    for target in ("logits", "kv@S2"):  # effects (patched - clean) against the float32 loop
        assert row["path"][target]["effect_err"] < 1e-4
    e = row["eap-ig"]  # benchmarks/circuits.py's workload, beside m x (forward + backward)
    assert e["ours_s"] > 0 and e["baseline_s"] > 0 and e["ratio"] == pytest.approx(e["ours_s"] / e["baseline_s"])
    assert "| EAP-IG |" in text and "not run" not in text.split("| EAP-IG |")[1].split("\n")[0]
    for axis in ("length",):  # (one axis: the run stays short; the others differ only in their points)
        g = results["growth_fp32"][axis]
        assert [p["x"] for p in g["points"]] == sorted(p["x"] for p in g["points"]) and len(g["points"]) == 3
        assert all(g["exponents"][k] is not None for k in ("heads_s", "path_s", "memories_s"))
    assert "| tiny | fp32 |" in text and "TL detect_head" in text and "How cost grows" in text


def test_growth_axes_have_three_rising_points_for_both_families():
    for family in ("tiny", "135m"):
        axes = scale.growth_axes(family)
        assert set(axes) == {"layers", "heads", "length"}
        for points in axes.values():
            xs = [x for x, _, _ in points]
            assert len(xs) == 3 and xs == sorted(set(xs))
        heads = axes["heads"]  # d_head fixed, query / KV ratio kept
        assert len({c["hidden_size"] // h for h, c, _ in heads}) == 1
        assert len({c["num_attention_heads"] / c["num_key_value_heads"] for _, c, _ in heads}) == 1


def test_a_filled_eap_ig_slot_gets_its_row_and_the_budget_skips_the_rest(monkeypatch, capsys):
    row = {"shape": "tiny", "dtype": "bf16", "params": 1e6, "eap-ig": {"ours_s": 2.0, "baseline_s": 1.0, "ratio": 2.0}}
    text = scale.markdown({"machine": "m", "torch": "t", "date": "d", "argv": "", "rows": [row], "skipped": ["8b bf16"]})
    assert "| EAP-IG | 2 | m x (forward + backward) | 1 | 2.00x |" in text and "Not run (time budget): 8b bf16" in text
    assert scale.main(["--quick", "--device", "cpu", "--budget-s", "0"]) == 0
    assert "skipped (past the 0 s budget): tiny bf16" in capsys.readouterr().out
