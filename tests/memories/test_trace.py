"""The trace (which memories drive a prediction): every memory's contribution is its direct
effect through the final norm's real scale, so a layer's contributions add up to its MLP's
direct effect and all components to the model's own logit; on the planted model the planted
memory leads and switching it off changes the prediction."""

from __future__ import annotations

import pytest
import torch

from interp import hooks
from interp.errors import WorkbenchError
from interp.lens import direction_logits
from interp.memories import IndexSettings, build_index, switch_off, trace
from interp.memories.trace import contributions, reading_direction

PROMPT = "And God said, Let there be light: and there was light"


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gpt2"])
@torch.no_grad()
def test_contributions_add_up_to_the_mlp_direct_effect_and_the_logit(name, request):
    model = request.getfixturevalue(name)
    tokens = model.to_tokens(PROMPT)
    got = contributions(model, tokens)
    t = got.token_id
    r = reading_direction(model, t)
    values = model.bridge.blocks[1].mlp.W_out.detach()[:4]
    torch.testing.assert_close(values @ r, direction_logits(model, values)[:, t])  # r_t reads what the lens reads
    L = model.info.n_layers
    names = [hooks.name("mlp_out", layer) for layer in range(L)] + [hooks.final_resid(L)]
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    # the real final-norm scale, recomputed from the residual stream the norm reads
    x = cache[hooks.final_resid(L)][0, -1].double()
    kind = model.info.normalization
    eps = model.bridge.cfg.eps
    centred = x - x.mean() if kind.startswith("LN") else x
    assert got.scale == pytest.approx(float((centred.pow(2).mean() + eps).sqrt()), rel=1e-5)
    for layer in range(L):  # a layer's memories (+ b_out) make exactly its MLP's direct effect
        effect = float(cache[hooks.name("mlp_out", layer)][0, -1].float() @ r) / got.scale
        assert float(got.mlp_effect[layer]) == pytest.approx(effect, rel=1e-4, abs=1e-6)
    # the residual stream's direct effect plus the norm's and unembedding's biases is the logit
    bias = getattr(model.bridge.ln_final, "b", None)
    w_u, b_u = model.bridge.W_U.detach(), model.bridge.b_U.detach()
    constant = float(b_u[t]) + (float(bias.detach() @ w_u[:, t]) if bias is not None else 0.0)
    assert float(x.float() @ r) / got.scale + constant == pytest.approx(float(logits[0, -1, t]), rel=1e-4, abs=1e-5)
    assert got.contributions.shape == (L, model.info.d_mlp)


def test_trace_lists_the_planted_memory_first_and_switching_it_off_changes_the_prediction(planted, tmp_path):
    p = planted.planted
    index = build_index(planted, IndexSettings(layers=[p["layer"]], n_tokens=800, top_k=4, seq_len=32, n_permutations=20),
                        tmp_path / "idx")  # fmt: skip
    t = trace(planted, "And the LORD", top=3, per_layer=2, index=index)
    assert t.token == p["promoted_str"] and t.prob > 0.5
    lead = t.top[0]
    assert (lead.layer, lead.neuron, lead.sign) == (p["layer"], p["neuron"], "+")
    assert lead.coefficient > 100 and lead.contribution > 0.9 * t.logit
    assert lead.value_tokens[0][0] == p["promoted_str"]
    assert [trig.token for trig in lead.triggers] == [p["trigger_str"]] * 3
    assert t.layers[p["layer"]].memories[0].name == lead.name
    assert t.layers[p["layer"]].mlp_effect >= lead.contribution - 1e-3
    assert all(m.contribution < 0 for m in t.against)
    # neuron 8's "-" memory is active here (c < 0) but writes nothing ' banana' reads
    others = {m.name: m for layer in t.layers for m in layer.memories}
    assert f"L{p['layer']} N{p['neuron_neg']}+" not in others
    off = switch_off(planted, "And the LORD", [(lead.layer, lead.neuron, lead.sign)])
    assert off.token == p["promoted_str"] and off.prob_after < 1e-3
    assert off.new_token == p["promoted_neg_str"]  # the "-" memory's token comes next
    both = switch_off(planted, "And the LORD", [(p["layer"], p["neuron"], "+"), (p["layer"], p["neuron_neg"], "-")])
    assert both.new_token not in (p["promoted_str"], p["promoted_neg_str"])
    # a sign that is not active does nothing
    idle = switch_off(planted, "And the LORD", [(p["layer"], p["neuron"], "-")])
    assert idle.top_after == idle.top_before


def test_trace_refuses_bad_requests(tiny_llama, tiny_gpt2, tmp_path):
    for prompt in ("", "   "):
        with pytest.raises(WorkbenchError, match="empty prompt"):
            trace(tiny_llama, prompt)
    with pytest.raises(WorkbenchError, match="reads at most 64"):
        trace(tiny_llama, PROMPT * 10)
    with pytest.raises(WorkbenchError, match="at least 1"):
        trace(tiny_llama, PROMPT, top=0)
    other = build_index(tiny_gpt2, IndexSettings(corpus="synthetic", layers=[0], n_tokens=100, top_k=2, n_permutations=5),
                        tmp_path / "gpt2")  # fmt: skip
    with pytest.raises(WorkbenchError, match="does not fit .*built with name"):
        trace(tiny_llama, PROMPT, index=other)
    with pytest.raises(WorkbenchError, match="no memory to switch off"):
        switch_off(tiny_llama, PROMPT, [])


@torch.no_grad()
def test_contributions_in_bfloat16_match_float32(tiny_llama_dir, tiny_llama):
    """A bfloat16 model's contributions (computed in float32 from its bfloat16 activations and
    weights) stay close to the float32 model's, and still add up to its own MLP direct effect."""
    from interp import load

    low = load(str(tiny_llama_dir), device="cpu", dtype="bfloat16")
    tokens = tiny_llama.to_tokens(PROMPT)
    want, got = contributions(tiny_llama, tokens), contributions(low, tokens)
    assert got.token_id == want.token_id
    scale = want.contributions.abs().max()
    assert (got.contributions - want.contributions).abs().max() < 0.05 * scale
    _, cache = low.run_with_cache(tokens, names_filter=lambda n: n == hooks.name("mlp_out", 1))
    r = reading_direction(low, got.token_id)
    effect = float(cache[hooks.name("mlp_out", 1)][0, -1].float() @ r) / got.scale
    assert float(got.mlp_effect[1]) == pytest.approx(effect, rel=0.05, abs=1e-3)


def test_a_long_prompt_shows_progress_layer_by_layer(tiny_llama):
    """Issue 28: an 8,100-token prompt's trace showed nothing while its pass ran. Progress follows
    the pass layer by layer; only the last position is kept, with the same numbers as a full cache."""
    calls = []
    prompt = "In the beginning God created the heaven and the earth. " * 5
    got = contributions(tiny_llama, tiny_llama.to_tokens(prompt), progress=lambda d, t, m: calls.append((d, t)))
    L = tiny_llama.info.n_layers
    assert calls == [(0, L)] + [(i + 1, L) for i in range(L)]
    _, cache = tiny_llama.run_with_cache(tiny_llama.to_tokens(prompt))
    from interp.memories.keys import coefficient_hook

    full = torch.stack([cache[coefficient_hook(layer)][0, -1].float() for layer in range(L)])
    torch.testing.assert_close(got.coefficients, full)
