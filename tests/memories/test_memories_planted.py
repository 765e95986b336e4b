"""Two hand-planted memories (both keyed on ' LORD'; the "+" one of neuron 7 writes ' banana',
the "-" one of neuron 8 writes ' robot') are found by the index on their own sign, and
switching one off through the hook removes its boost and leaves the other sign alone."""

from __future__ import annotations

import torch

from interp.memories import IndexSettings, build_index, intervene
from interp.memories.intervene import memory_hook
from interp.memories.keys import coefficient_hook

TRIGGER, PROMOTED, PROMOTED_NEG = " LORD", " banana", " robot"  # as planted by the `planted` fixture (conftest.py)


def test_index_finds_both_planted_memories_on_their_own_sign(planted, tmp_path):
    p = planted.planted
    assert (p["trigger_str"], p["promoted_str"], p["promoted_neg_str"]) == (TRIGGER, PROMOTED, PROMOTED_NEG)
    index = build_index(planted, IndexSettings(layers=[p["layer"]], n_tokens=1500, top_k=5, seq_len=32,
                                               n_permutations=50), tmp_path / "idx", batch_size=8)  # fmt: skip
    assert index.signs == ("+", "-")
    pos = index.show(p["layer"], p["neuron"], "+")
    assert [t.token for t in pos.triggers] == [TRIGGER] * 5
    assert pos.value_tokens[0][0] == PROMOTED and pos.value_tokens[0][1] > 0.5
    assert pos.triggers[0].coefficient > 100
    neg = index.show(p["layer"], p["neuron_neg"], "-")
    assert [t.token for t in neg.triggers] == [TRIGGER] * 5
    assert neg.triggers[0].coefficient > 100  # the "-" memory's own coefficient, -c > 0
    assert neg.value_tokens[0][0] == PROMOTED_NEG and neg.value_tokens[0][1] > 0.25  # logit 10 over 50k tokens
    # the other sign of each planted neuron is never active: no trigger examples, activity 0
    for neuron, sign in ((p["neuron"], "-"), (p["neuron_neg"], "+")):
        view = index.show(p["layer"], neuron, sign)
        assert view.triggers == [] and view.active_fraction == 0.0
    # the "+" value of neuron 8 is -(the "-" value): ' robot' is its least likely token
    assert PROMOTED_NEG not in [t for t, _ in index.show(p["layer"], p["neuron_neg"], "+").value_tokens]
    hits = index.search(PROMOTED.strip())
    assert (hits[0].layer, hits[0].neuron, hits[0].sign) == (p["layer"], p["neuron"], "+")
    hits = index.search(PROMOTED_NEG.strip())
    assert (hits[0].layer, hits[0].neuron, hits[0].sign) == (p["layer"], p["neuron_neg"], "-")
    # the other neurons' triggers are not all ' LORD' (the index is not trivially constant)
    other = index.show(p["layer"], (p["neuron"] + 2) % planted.info.d_mlp)
    assert {t.token for t in other.triggers} != {TRIGGER}
    rows = {r["group"]: r for r in index._agreement}
    assert set(rows) == {"all", "+", "-"}
    assert rows["all"]["n_memories"] == rows["+"]["n_memories"] + rows["-"]["n_memories"]


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


def test_switching_off_is_sign_aware(planted):
    """Neuron 8's coefficient is negative on ' LORD': switching its "-" memory off removes the
    ' robot' boost; switching its "+" memory off changes nothing (that memory is not active)."""
    p = planted.planted
    neg = intervene(planted, "And the LORD", p["layer"], p["neuron_neg"], mode="off", sign="-", generate=0)
    assert neg.value_token == PROMOTED_NEG and neg.original_coefficient > 100
    assert neg.value_token_prob[1] < neg.value_token_prob[0] / 100
    pos = intervene(planted, "And the LORD", p["layer"], p["neuron_neg"], mode="off", sign="+", generate=0)
    assert pos.original_coefficient < -100 and pos.kl == 0.0 and pos.logit_change == 0.0
    # on: the "-" memory's coefficient v sets the neuron to -v, which promotes ' robot'
    on = intervene(planted, "In the beginning God", p["layer"], p["neuron_neg"], mode="on", value=50.0, sign="-",
                   generate=0)  # fmt: skip
    assert on.value_token_prob[1] > 0.5 > on.value_token_prob[0]


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
