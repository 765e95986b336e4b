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
    assert lead.value_tokens[0][0] == p["promoted_str"] and lead.token_rank == 1  # its value's top token
    assert lead.total_effect > 0.9 * t.logit and lead.prob_off < 1e-3  # switched off, the prediction goes
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
    with pytest.raises(WorkbenchError, match="unknown ranking 'loud'; use one of direct, lm-debugger"):
        trace(tiny_llama, PROMPT, rank="loud")
    with pytest.raises(WorkbenchError, match="n_total at least 0"):
        trace(tiny_llama, PROMPT, n_total=-1)


@torch.no_grad()
def test_trace_names_its_ranking_and_sets_total_effect_and_rank_beside_the_direct_effect(tiny_llama):
    """Issue 27: the trace says what it ranks by; LM-Debugger's ranking (|coefficient| x value norm)
    is offered; the first memories carry their total effect (the prediction with the memory off,
    recomputed here by switch_off) and every memory the predicted token's rank in its value."""
    from interp.memories.keys import SIGN_FACTOR
    from interp.memories.trace import RANKINGS
    from interp.memories.values import value_vectors

    got = contributions(tiny_llama, tiny_llama.to_tokens(PROMPT))
    t = trace(tiny_llama, PROMPT, top=4, per_layer=2, n_total=3)
    assert t.ranking == "direct" and t.ranking_label == RANKINGS["direct"]
    assert RANKINGS["direct"].startswith("direct effect on the predicted token")
    direct = [m.contribution for m in t.top]
    assert direct == sorted(direct, reverse=True) and direct[0] == pytest.approx(float(got.contributions.max()), rel=1e-5)
    for i, m in enumerate(t.top):
        if i < 3:
            off = switch_off(tiny_llama, PROMPT, [(m.layer, m.neuron, m.sign)])
            assert m.total_effect == pytest.approx(off.logit_before - off.logit_after, abs=1e-5)
            assert m.prob_off == pytest.approx(off.prob_after, abs=1e-6)
        else:
            assert m.total_effect is None and m.prob_off is None
        value = value_vectors(tiny_llama, m.layer)[m.neuron].float() * SIGN_FACTOR[m.sign]
        logits = direction_logits(tiny_llama, value[None])[0]
        assert m.token_rank == int((logits > logits[t.token_id]).sum()) + 1
        assert m.value_norm == pytest.approx(float(value.norm()), rel=1e-5)

    lm = trace(tiny_llama, PROMPT, top=4, per_layer=2, n_total=0, rank="lm-debugger")
    assert lm.ranking == "lm-debugger" and "|coefficient| × the value's norm" in lm.ranking_label
    norms = torch.stack([value_vectors(tiny_llama, la).float().norm(dim=-1) for la in range(tiny_llama.info.n_layers)])
    score = got.coefficients.abs() * norms
    want = score.flatten().topk(4).indices.tolist()
    n = tiny_llama.info.d_mlp
    assert [(m.layer, m.neuron) for m in lm.top] == [divmod(i, n) for i in want]
    assert all(m.total_effect is None for m in lm.top)
    for layer in lm.layers:
        scores = [m.lm_debugger_score for m in layer.memories]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] == pytest.approx(float(score[layer.layer].max()), rel=1e-5)
    assert [m.name for m in lm.against] == [m.name for m in t.against]  # "against" is by direct effect either way


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


def test_trace_cli_names_the_ranking_and_prints_total_effects(tiny_llama_dir, capsys):
    from interp.cli import main

    argv = ["memories", "trace", "--model", str(tiny_llama_dir), "--prompt", PROMPT, "--top", "3", "--per-layer", "1",
            "--device", "cpu"]  # fmt: skip
    assert main(argv + ["--total", "2"]) == 0
    out = capsys.readouterr().out
    assert "ranked by direct effect on the predicted token" in out and "memories raising" in out
    rows = [line for line in out.splitlines() if "rank " in line and " coef " in line]
    assert len(rows) >= 3 and sum("(p off " in r for r in rows[:3]) == 2  # the first two of the ranking
    assert rows[2].split()[1] == "-"  # the third has none, and the legend under the lists says why
    assert "  -: total effect not measured: it is measured for the first 2 raising it, each switched off" in out
    assert main(argv + ["--rank", "lm-debugger", "--total", "0"]) == 0
    out = capsys.readouterr().out
    assert "ranked by LM-Debugger's ranking: |coefficient| × the value's norm" in out and "(p off" not in out
    assert "  -: total effect not measured: it is measured for none (--total 0)" in out
    assert main(argv + ["--total", "3"]) == 0
    out = capsys.readouterr().out  # every memory raising it measured: a "-" only where one lowers it
    lowering = "memories lowering" in out
    legend = [line for line in out.splitlines() if line.startswith("  -: total effect not measured")]
    assert len(legend) == int(lowering) and all("; the memories lowering" in line for line in legend)
    assert main(argv + ["--rank", "loud"]) == 2
    assert "unknown ranking 'loud'; use --rank direct or --rank lm-debugger" in capsys.readouterr().err
