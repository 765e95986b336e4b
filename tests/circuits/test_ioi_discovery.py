"""Issue 30's pieces of the IOI analysis, each against a plain reference: admission by threshold,
the validation split, the faithfulness-against-heads curve, minimality's noise level, the greedy
search for completeness's worst subset, and their bad input."""

from __future__ import annotations

import pytest
import torch

from interp.circuits.discover import DiscoveryConfig, admitted, direct_class
from interp.circuits.evaluate import abc_means, evaluate, greedy_subset
from interp.circuits.head_configs import Configs, ablated_logit_diffs_reference, head_mask, head_positions
from interp.cli import main
from interp.data.ioi import BASE_TEMPLATES, NAMES, ioi_split, make_ioi, part_of
from interp.errors import WorkbenchError

CLASSES = {"name mover": [(1, 0), (1, 2)], "induction": [(0, 1)], "previous token": [(0, 3)]}


def test_admission_is_a_share_of_the_steps_largest_effect():
    e = torch.tensor([[-0.50, 0.04, float("nan")], [0.20, -0.06, 0.003]])
    cfg = DiscoveryConfig(threshold=0.1, floor=0.005)
    # |e| >= 0.1 * 0.5 = 0.05: three heads, strongest first; NaN (not patched) never admitted
    assert admitted(e, cfg, set()) == [(0, 0), (1, 0), (1, 1)]
    assert admitted(e, cfg, {(1, 0)}) == [(0, 0), (1, 1)]  # a head joins the first step that admits it
    assert admitted(e, DiscoveryConfig(threshold=0.5), set()) == [(0, 0)]
    assert admitted(e, DiscoveryConfig(threshold=1.0), set()) == [(0, 0)]
    # the floor: a step whose effects are all tiny admits nothing
    assert admitted(e * 0.001, DiscoveryConfig(threshold=0.1, floor=0.005), set()) == []
    assert admitted(torch.full((2, 3), float("nan")), cfg, set()) == []


def test_absolute_admission_ignores_the_steps_largest_effect():
    # threshold None: |e| >= floor of the IOI gap, however large the step's strongest head
    e = torch.tensor([[-0.90, 0.04, float("nan")], [0.02, -0.006, 0.003]])
    assert admitted(e, DiscoveryConfig(threshold=None, floor=0.005), set()) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert admitted(e, DiscoveryConfig(threshold=None, floor=0.03), set()) == [(0, 0), (0, 1)]
    assert admitted(e, DiscoveryConfig(threshold=0.1, floor=0.005), set()) == [(0, 0)]  # the relative rule: 0.09


@pytest.mark.parametrize("floor", [-0.1, 1.0, float("nan")])
def test_a_floor_outside_0_1_is_refused(floor):
    with pytest.raises(WorkbenchError, match=r"choose one in \(0, 1\)"):
        DiscoveryConfig(floor=floor)


def test_absolute_admission_needs_a_floor():
    with pytest.raises(WorkbenchError, match="floor"):
        DiscoveryConfig(threshold=None, floor=0.0)


def test_direct_heads_are_named_by_sign_and_attention():
    e = torch.tensor([[-0.4, 0.3, -0.2, 0.1]])
    att = {"END->IO": torch.tensor([[0.6, 0.5, 0.0, 0.0]]), "END->S1": torch.tensor([[0.1, 0.0, 0.7, 0.0]]),
           "END->S2": torch.tensor([[0.0, 0.0, 0.1, 0.05]])}  # fmt: skip
    cfg = DiscoveryConfig()
    assert [direct_class((0, h), e, att, cfg) for h in range(4)] == [
        "name mover", "negative name mover", "s suppression", "other direct"]  # fmt: skip


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_a_threshold_outside_0_1_is_refused(bad):
    with pytest.raises(WorkbenchError, match=r"choose one in \(0, 1\]"):
        DiscoveryConfig(threshold=bad)


def test_validation_is_carved_from_the_discovery_half(tiny_llama):
    d, e = part_of(BASE_TEMPLATES, "discovery"), part_of(BASE_TEMPLATES, "evaluation")
    s, v = part_of(BASE_TEMPLATES, "search"), part_of(BASE_TEMPLATES, "validation")
    assert sorted(s + v) == sorted(d) and not set(s) & set(v) and not (set(s) | set(v)) & set(e)
    assert sorted(part_of(NAMES, "search") + part_of(NAMES, "validation")) == sorted(part_of(NAMES, "discovery"))
    split = ioi_split(tiny_llama, 6, 6, seed=1, validation=True)
    assert split.score.source["part"] == "search" and split.heldout.source["part"] == "validation"
    assert not set(split.score.source["names"]) & set(split.heldout.source["names"])
    assert set(split.heldout.source["names"]) <= set(part_of(NAMES, "discovery"))
    with pytest.raises(WorkbenchError, match="choose one of discovery, evaluation, search, validation"):
        part_of(NAMES, "test")


def _F(model, ds, means, keep_all, keep_at, classes):
    """Mean logit diff of one configuration by the plain reference (one hooked pass)."""
    configs = Configs(keep_all[None], keep_at[None], head_positions(model, ds, classes))
    return ablated_logit_diffs_reference(model, ds, means, configs)[0].double().mean()


def test_curve_noise_and_greedy_match_the_reference(tiny_llama):
    """Every point of the faithfulness curve, the noise level and the greedy K, recomputed with one
    hooked forward pass per configuration."""
    model = tiny_llama
    ds = make_ioi(model, 8, seed=3, part="evaluation")
    ranked = [((1, 2), "name mover"), ((0, 1), "induction"), ((1, 0), "name mover"), ((0, 3), "previous token")]
    ev = evaluate(model, ds, CLASSES, checks=True, n_random=1, n_abc=2, n_boot=100, ranked=ranked, n_noise=3,
                  greedy_size=2)  # fmt: skip
    means = abc_means(model, ds, 2)
    positioned = head_mask(model, [h for hs in CLASSES.values() for h in hs])  # every class here has a position
    everywhere = torch.ones_like(positioned)
    m = _F(model, ds, means, everywhere, torch.zeros_like(positioned), CLASSES)
    assert [p["k"] for p in ev.curve] == [1, 2, 3, 4] and [tuple(p["head"]) for p in ev.curve] == [h for h, _ in ranked]
    for p in ev.curve:
        first = head_mask(model, [h for h, _ in ranked[: p["k"]]])
        f = _F(model, ds, means, torch.zeros_like(first), first, CLASSES) / m
        assert p["value"] == pytest.approx(float(f), abs=1e-4) and p["lo"] <= p["value"] <= p["hi"]
    assert ev.curve[-1]["value"] == pytest.approx(ev.faithfulness.value, abs=1e-9)  # all heads: the circuit
    c = _F(model, ds, means, torch.zeros_like(positioned), positioned, CLASSES)
    assert len(ev.noise["heads"]) == 3 and not {tuple(h) for h in ev.noise["heads"]} & set(sum(CLASSES.values(), []))
    for r in ev.noise["heads"]:
        plus = _F(model, ds, means, head_mask(model, [tuple(r)]), positioned, CLASSES)
        assert ev.noise["per_head"][f"{r[0]}.{r[1]}"] == pytest.approx(float((plus - c).abs() / c.abs()), abs=1e-4)
    # greedy: step one takes the head whose removal opens the widest gap |F(C \ v) - F(M \ v)|
    circuit = sorted(h for hs in CLASSES.values() for h in hs)

    def gap(K):
        k = head_mask(model, K)
        return float((_F(model, ds, means, torch.zeros_like(k), positioned & ~k, CLASSES)
                      - _F(model, ds, means, ~k, torch.zeros_like(k), CLASSES)).abs())  # fmt: skip

    first = max(circuit, key=lambda v: gap([v]))
    second = max((v for v in circuit if v != first), key=lambda v: gap([first, v]))
    greedy = next(r for r in ev.completeness if r["removed"] == "greedy")
    assert [tuple(h) for h in greedy["heads"]] == [first, second]
    assert greedy["gap"] == pytest.approx(gap([first, second]), abs=1e-4)
    assert ev.incompleteness.value == pytest.approx(max(r["gap"] for r in ev.completeness) / abs(float(m)), abs=1e-6)


def test_greedy_subset_is_resampled_with_its_k_fixed(tiny_llama):
    from interp.stats import resample_indices

    ds = make_ioi(tiny_llama, 6, seed=4, part="evaluation")
    means = abc_means(tiny_llama, ds, 2)
    idx = resample_indices(len(ds), 50, 0)
    K, (_, cb), (_, mkb) = greedy_subset(tiny_llama, ds, means, CLASSES, 3, idx)
    assert len(K) == 3 == len(set(K)) and cb.shape == mkb.shape == (50,)


def test_greedy_steps_after_the_first_stay_in_the_pool(tiny_llama):
    """With a pool of 2 the search ends after two steps: K is the two heads whose removal alone opened
    the widest gaps, and its first head is the unbounded search's first."""
    from interp.stats import resample_indices

    ds = make_ioi(tiny_llama, 6, seed=4, part="evaluation")
    means = abc_means(tiny_llama, ds, 2)
    idx = resample_indices(len(ds), 20, 0)
    full, *_ = greedy_subset(tiny_llama, ds, means, CLASSES, 3, idx, pool=8)
    K, *_ = greedy_subset(tiny_llama, ds, means, CLASSES, 3, idx, pool=2)
    assert len(K) == 2 and K[0] == full[0]
    positioned = head_mask(tiny_llama, [h for hs in CLASSES.values() for h in hs])
    none = torch.zeros_like(positioned)
    alone = {}  # the pool by hand: the gap each head opens alone, by the plain reference
    for v in sorted(h for hs in CLASSES.values() for h in hs):
        k = head_mask(tiny_llama, [v])
        alone[v] = abs(float(_F(tiny_llama, ds, means, none, positioned & ~k, CLASSES) - _F(tiny_llama, ds, means, ~k, none, CLASSES)))
    assert set(K) == set(sorted(alone, key=alone.get, reverse=True)[:2])


@pytest.mark.parametrize("args, message", [
    (["--threshold", "0"], "choose one in (0, 1]"), (["--threshold", "2"], "choose one in (0, 1]"),
    (["--corruption", "xyz"], "IOI corruption"), (["--max-heads", "0"], "keep at least 1 head"),
    (["--paths", "both"], "choose one of joint, each"),
])  # fmt: skip
def test_bad_discovery_settings_are_one_line_exit_2(args, message, tmp_path, capsys):
    assert main(["ioi", "--model", "smollm2-135m", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # refused before any model work
