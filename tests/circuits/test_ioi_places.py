"""Where IOI circuit heads work (interp.circuits.positions): the segments, the gains against finite
differences of a plain hooked run, the search's rule, and the evaluation at the places found."""

from __future__ import annotations

import pytest
import torch

from interp import hooks
from interp.circuits.discover import DiscoveryConfig
from interp.circuits.evaluate import abc_means, evaluate
from interp.circuits.head_configs import CLASS_POSITIONS
from interp.circuits.positions import SEGMENTS, find_places, gains, places_mask, segment_masks
from interp.data.ioi import make_ioi
from interp.errors import WorkbenchError

CLASSES = {"name mover": [(1, 0), (1, 2)], "induction": [(0, 1)], "previous token": [(0, 3)]}
CLASS_PLACES = {h: [CLASS_POSITIONS[c]] for c, hs in CLASSES.items() for h in hs}


@pytest.fixture(scope="module")
def ioi(tiny_llama):
    ds = make_ioi(tiny_llama, 8, seed=3, part="evaluation")
    return tiny_llama, ds, abc_means(tiny_llama, ds, 2)


def test_segments_cover_every_position_up_to_end_and_name_the_tasks_positions(ioi):
    _, ds, _ = ioi
    seg = segment_masks(ds)
    assert tuple(seg) == SEGMENTS
    ar = torch.arange(ds.clean.shape[1])
    upto = ar[None] <= ds.positions["END"][:, None]
    covered = torch.stack(list(seg.values())).any(0)
    assert torch.equal(covered, upto)  # every position up to END, none after (padding)
    for k in ("IO", "S1", "S1+1", "S2", "END"):
        assert torch.equal(seg[k], ds.positions[k][:, None] == ar[None])
    unnamed = torch.stack([seg[k] for k in ("prefix", "between", "after S2")])
    assert int(unnamed.sum(0).max()) <= 1 and not (unnamed.any(0) & torch.stack([seg[k] for k in
                                                                                 ("IO", "S1", "S1+1", "S2", "END")]).any(0)).any()  # fmt: skip
    assert bool(seg["after S2"].any())  # the templates have tokens between S2 and END


def _F(model, ds, means, keep: dict[int, torch.Tensor]) -> float:
    """Plain reference: one hooked pass with z = mean + keep * (z - mean), keep [batch pos head] per layer."""
    edits = [(hooks.name("z", layer), lambda z, hook, layer=layer: means[layer] + keep[layer][..., None] * (z - means[layer]))
             for layer in range(model.info.n_layers)]  # fmt: skip
    logits = hooks.run_until(model, ds.clean, edits, last=None)
    rows = torch.arange(len(ds))
    end = logits[rows, ds.end]
    return float((end[rows, ds.answers] - end[rows, ds.distractors]).detach().double().mean())


def test_gains_are_the_derivative_of_the_circuits_logit_diff(ioi):
    """Each (head, segment) gain equals a central finite difference of the plain hooked run in the
    keep share of that head at that segment's positions, signed towards F(M) and divided by |F(M)|."""
    model, ds, means = ioi
    kept = places_mask(model, ds, CLASS_PLACES)
    f_model = _F(model, ds, means, {layer: torch.ones(*ds.clean.shape, model.info.n_heads) for layer in range(2)})
    g = gains(model, ds, means, kept, f_model)
    base = {layer: kept[layer].permute(1, 2, 0).double().float() for layer in range(model.info.n_layers)}
    f_c = _F(model, ds, means, base)
    sign = 1.0 if f_model >= f_c else -1.0
    seg = segment_masks(ds)
    eps = 1e-2
    for (layer, h) in [(0, 1), (1, 0), (1, 3)]:
        for i, s in enumerate(SEGMENTS):
            up = {k: v.clone() for k, v in base.items()}
            down = {k: v.clone() for k, v in base.items()}
            up[layer][..., h] += eps * seg[s]
            down[layer][..., h] -= eps * seg[s]
            fd = (_F(model, ds, means, up) - _F(model, ds, means, down)) / (2 * eps)
            assert float(g[layer, h, i]) == pytest.approx(sign * fd / abs(f_model), rel=1e-2, abs=2e-4), (layer, h, s)


def test_the_search_adds_segments_whose_gain_reaches_the_threshold(ioi):
    model, ds, means = ioi
    places, g = find_places(model, ds, CLASSES, CLASS_POSITIONS, 1.0, means)
    top = float(max(g[h[0], h[1]].max() for h in CLASS_PLACES))
    if top < 1.0:  # nothing reaches a whole F(M): only the classes' positions
        assert places == CLASS_PLACES
    low = 0.5 * max(top, 1e-4)
    places, g = find_places(model, ds, CLASSES, CLASS_POSITIONS, low, means)
    for h, names in places.items():
        assert CLASS_PLACES[h][0] in names
        for i, s in enumerate(SEGMENTS):
            if s != CLASS_PLACES[h][0]:  # one round: the gains it read are those of the classes' circuit
                first = gains(model, ds, means, places_mask(model, ds, CLASS_PLACES), _F(
                    model, ds, means, {la: torch.ones(*ds.clean.shape, model.info.n_heads) for la in range(2)}))
                assert (s in names) == (float(first[h[0], h[1], i]) >= low)
                break


def test_evaluation_at_places(ioi):
    """Places equal to the classes' positions give the class figure; every segment gives the
    all-positions figure (positions after END do not reach END's logits)."""
    model, ds, _ = ioi
    plain = evaluate(model, ds, CLASSES, checks=False, n_abc=2, n_boot=50)
    same = evaluate(model, ds, CLASSES, checks=False, n_abc=2, n_boot=50, places=CLASS_PLACES)
    assert same.faithfulness.value == pytest.approx(plain.faithfulness.value, abs=1e-6)
    assert same.faithfulness_class_positions.value == pytest.approx(plain.faithfulness.value, abs=1e-6)
    rows = plain.by_template  # per base template: its prompts' means, which pool back to the whole figures
    assert sum(r["n"] for r in rows) == len(ds) and {r["template"] for r in rows} <= set(ds.source["templates"])
    pooled = lambda key: sum(r["n"] * r[key] for r in rows) / len(ds)  # noqa: E731
    assert pooled("circuit") / pooled("model") == pytest.approx(plain.faithfulness.value, abs=1e-6)
    assert all(r["faithfulness"] == pytest.approx(r["circuit"] / r["model"]) for r in rows)
    every = evaluate(model, ds, CLASSES, checks=True, n_abc=2, n_boot=50, n_random=1, greedy_size=1,
                     places={h: list(SEGMENTS) for h in CLASS_PLACES})  # fmt: skip
    assert every.faithfulness.value == pytest.approx(plain.faithfulness_all_positions.value, abs=1e-5)
    assert every.places == {f"{h[0]}.{h[1]}": list(SEGMENTS) for h in sorted(CLASS_PLACES)}


@pytest.mark.parametrize("bad", [0.0, -0.2, 1.5])
def test_a_position_threshold_outside_0_1_is_refused(bad):
    with pytest.raises(WorkbenchError, match=r"position threshold .* choose one in \(0, 1\]"):
        DiscoveryConfig(position_threshold=bad)
    with pytest.raises(WorkbenchError, match="at least 1 round"):
        DiscoveryConfig(position_rounds=0)
