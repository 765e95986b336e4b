"""A hand-planted memory (key fires on ' LORD', value writes ' banana') is found by the index,
and switching it off through the hook removes the boost it gives ' banana'."""

from __future__ import annotations

import torch

from interp.memories import IndexSettings, build_index, intervene
from interp.memories.intervene import memory_hook
from interp.memories.keys import coefficient_hook

TRIGGER, PROMOTED = " LORD", " banana"  # as planted by the `planted` fixture (conftest.py)


def test_index_finds_planted_trigger_and_promoted_token(planted, tmp_path):
    p = planted.planted
    assert (p["trigger_str"], p["promoted_str"]) == (TRIGGER, PROMOTED)
    index = build_index(planted, IndexSettings(layers=[p["layer"]], n_tokens=1500, top_k=5, seq_len=32), tmp_path / "idx",
                        batch_size=8)
    view = index.show(p["layer"], p["neuron"])
    assert [t.token for t in view.triggers] == [TRIGGER] * 5
    assert view.value_tokens[0][0] == PROMOTED and view.value_tokens[0][1] > 0.5
    assert view.triggers[0].coefficient > 100
    hits = index.search(PROMOTED.strip())
    assert (hits[0].layer, hits[0].neuron) == (p["layer"], p["neuron"])
    # the other neurons' triggers are not all ' LORD' (the index is not trivially constant)
    other = index.show(p["layer"], (p["neuron"] + 1) % planted.info.d_mlp)
    assert {t.token for t in other.triggers} != {TRIGGER}


def test_switching_the_memory_off_removes_the_boost(planted):
    p = planted.planted
    r = intervene(planted, "And the LORD", p["layer"], p["neuron"], mode="off", generate=3)
    assert r.value_token == PROMOTED
    before, after = r.value_token_prob
    assert r.top_before[0][0] == PROMOTED and before > 0.5
    assert after < 1e-3 and r.original_coefficient > 100 and r.coefficient == 0.0
    assert r.generation_before.startswith(PROMOTED) and not r.generation_after.startswith(PROMOTED)
    # reference: the same run with the neuron's value zeroed in the weights gives the same logits
    tokens = planted.to_tokens("And the LORD")
    hooked = planted.run_with_hooks(tokens, fwd_hooks=[(coefficient_hook(p["layer"]), memory_hook(p["neuron"], 0.0))])
    down = planted.bridge.original_model.model.layers[p["layer"]].mlp.down_proj.weight
    saved = down[:, p["neuron"]].clone()
    with torch.no_grad():
        down[:, p["neuron"]] = 0
        try:
            ablated = planted(tokens)
        finally:
            down[:, p["neuron"]] = saved
    torch.testing.assert_close(hooked, ablated)


def test_switching_a_memory_on_adds_its_value(planted):
    """Setting the coefficient to c adds (c - c0) * W_out[i] to the last layer's output."""
    p = planted.planted
    tokens = planted.to_tokens("In the beginning God")
    name = f"blocks.{p['layer']}.hook_resid_post"
    _, base = planted.run_with_cache(tokens, names_filter=lambda n: n in (name, coefficient_hook(p["layer"])))
    seen = {}
    with planted.hooks([(coefficient_hook(p["layer"]), memory_hook(p["neuron"], 50.0)),
                        (name, lambda t, hook: seen.setdefault("r", t.detach().clone()))]):  # fmt: skip
        planted(tokens)
    c0 = base[coefficient_hook(p["layer"])][0, :, p["neuron"]]
    w = planted.bridge.blocks[p["layer"]].mlp.W_out[p["neuron"]].detach()
    torch.testing.assert_close(seen["r"][0] - base[name][0], (50.0 - c0)[:, None] * w, atol=1e-4, rtol=1e-4)
    r = intervene(planted, "In the beginning God", p["layer"], p["neuron"], mode="on", value=50.0, generate=0)
    assert r.value_token_prob[1] > 0.5 > r.value_token_prob[0]
