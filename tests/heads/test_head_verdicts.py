"""Every verdict says why (issue 27): `judge` names the comparison that decided it, with the numbers
and the thresholds, and the CLI's table and csv print it."""

from __future__ import annotations

import csv
import io

import pytest

from interp.commands.heads import render
from interp.errors import WorkbenchError
from interp.heads import FindConfig, heads_report
from interp.heads.find import HeadFinding, judge

CFG = FindConfig(min_score=0.4)


def finding(kind="induction", score=0.8, copying=1.0, mean=(0.5, 0.3, 0.7), zero=(0.6, 0.4, 0.8), drop=None):
    return HeadFinding(17, 3, kind, score, copying=copying, causal_effect=mean[0], causal_effect_lo=mean[1],
                       causal_effect_hi=mean[2], zero_effect=zero[0], zero_effect_lo=zero[1], zero_effect_hi=zero[2],
                       induction_drop=drop)  # fmt: skip


def test_a_large_effect_with_a_low_score_is_not_confirmed_and_says_so():
    """The issue's case: L17H3 changes the loss by +1.26 nats and is "not confirmed"."""
    verdict, why = judge(finding(score=0.31, mean=(1.26, 1.1, 1.4)), CFG)
    assert verdict == "not confirmed"
    assert why.startswith("score 0.310 < 0.4 although its Δloss +1.260 [+1.100, +1.400] nats is clear")
    assert "pattern is too weak" in why


def test_confirmed_names_every_rule_it_passed():
    verdict, why = judge(finding(), CFG)
    assert verdict == "confirmed"
    assert why == "score 0.800 ≥ 0.4; copy z 1.00 ≥ 0.5; Δloss +0.500 [+0.300, +0.700] nats, lower end ≥ 0.05"
    verdict, why = judge(finding("previous-token", copying=None, mean=(0.02, -0.01, 0.06), drop=0.2), CFG)
    assert verdict == "confirmed" and why == "score 0.800 ≥ 0.4; later induction scores drop +0.200 ≥ 0.05"


def test_flagged_gives_both_ablations_upper_ends():
    verdict, why = judge(finding(mean=(0.01, -0.01, 0.03), zero=(0.0, -0.02, 0.04)), CFG)
    assert verdict == "flagged"
    assert why == ("score 0.800 ≥ 0.4 but no effect: Δloss +0.010 [-0.010, +0.030] nats (mean) and +0.000 "
                   "[-0.020, +0.040] (zero), both upper ends < 0.05")


@pytest.mark.parametrize(
    "kw, expected",
    [
        ({"copying": 0.2}, "copy z 0.20 < 0.5"),
        ({"copying": None}, "no copying score"),
        ({"mean": (0.04, -0.01, 0.09)},
         "Δloss +0.040 [-0.010, +0.090] nats: lower end < 0.05 (inconclusive: an effect ≥ 0.05 is not ruled out either)"),
        ({"kind": "previous-token", "copying": None, "mean": (0.04, 0.01, 0.09), "drop": 0.01},
         ("Δloss +0.040 [+0.010, +0.090] nats: lower end < 0.05 and later induction scores drop +0.010 < 0.05 "
          "(inconclusive: an effect ≥ 0.05 is not ruled out either)")),
        ({"score": 0.1, "copying": 0.1, "mean": (0.0, -0.1, 0.01), "zero": (0.0, -0.1, 0.01)},
         "score 0.100 < 0.4; copy z 0.10 < 0.5; Δloss +0.000 [-0.100, +0.010] nats: lower end < 0.05"),
    ],
)  # fmt: skip
def test_not_confirmed_lists_each_rule_it_failed(kw, expected):
    assert judge(finding(**kw), CFG) == ("not confirmed", expected)


def test_judging_an_unchecked_head_is_refused():
    with pytest.raises(WorkbenchError, match="run the causal check"):
        judge(HeadFinding(0, 0, "induction", 0.9), CFG)


def test_cli_table_and_csv_carry_the_reasons(planted):
    report = heads_report(planted, top=2, validate=True, config=FindConfig(n_seqs=4, seg_len=10, validate_seqs=4))
    assert all(f.verdict in ("confirmed", "not confirmed", "flagged") and f.why for f in report.findings)
    assert [f.confirmed for f in report.findings] == [f.verdict == "confirmed" for f in report.findings]
    text = render(report, "table")
    lines = text.splitlines()
    why = lines.index("why:")
    assert lines[why + 1].startswith("  L0H0 previous-token: confirmed: score 1.000 ≥ 0.5; Δloss +3.")
    assert "L1H1 induction: not confirmed: score 0.063 < 0.5; copy z 0.00 < 0.5;" in text
    assert not any(line.rstrip().endswith(" -") for line in lines)  # no bare "-" verdict left
    assert max(len(line) for line in lines[why:] if not line.startswith("Δloss")) <= 99
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert {r["verdict"] for r in rows} == {"confirmed", "not confirmed"}
    assert all(r["why"] for r in rows)
    unchecked = render(heads_report(planted, top=1, config=FindConfig(n_seqs=2, seg_len=10)), "csv")
    assert "why" not in unchecked.splitlines()[0]
