"""The logit lens against a direct computation through the Hugging Face model (hidden states ->
final norm -> lm_head), on GPT-2-style and Llama-style tiny models."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from interp import WorkbenchError
from interp.lens import logit_lens, project

PROMPT = "When Mary and John went to the store, John gave a drink to"


def _hf_reference(folder, tokens: torch.Tensor) -> torch.Tensor:
    """Logits [layer, pos, vocab] read from HF's hidden states: embedding, then after each block.
    HF's last hidden state is already normalized, so the last row is the model's own logits."""
    hf = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval()
    with torch.no_grad():
        out = hf(tokens, output_hidden_states=True)
    norm = hf.transformer.ln_f if hasattr(hf, "transformer") else hf.model.norm
    rows = [hf.lm_head(norm(h[0])) for h in out.hidden_states[:-1]] + [out.logits[0]]
    return torch.stack(rows)


@pytest.mark.parametrize("which", ["tiny_gpt2", "tiny_llama"])
def test_lens_matches_direct_computation(which, request):
    model, folder = request.getfixturevalue(which), request.getfixturevalue(f"{which}_dir")
    lens = logit_lens(model, PROMPT, k=3)
    tokens = model.to_tokens(PROMPT)
    ref = _hf_reference(folder, tokens.cpu()).softmax(-1)
    n_layers, n_pos = model.info.n_layers + 1, tokens.shape[-1]
    assert lens.top_ids.shape == (n_layers, n_pos, 3) and len(lens.layer_names) == n_layers
    ref_top = ref.topk(3, dim=-1)
    torch.testing.assert_close(lens.top_probs, ref_top.values, atol=1e-5, rtol=1e-4)
    assert torch.equal(lens.top_ids, ref_top.indices)
    assert lens.top_tokens[2][5][0] == model.tokenizer.decode([int(ref_top.indices[2, 5, 0])])
    assert lens.str_tokens == model.to_str_tokens(tokens[0])
    # the last row is the model's own prediction, so the final prediction has rank 0 there
    final, _ = model.top_predictions(PROMPT, 1)[0]
    assert lens.top_tokens[-1][-1][0] == final
    assert (lens.final_rank[-1] == 0).all()
    expected_rank = (ref > ref.gather(-1, ref[-1].argmax(-1).expand(n_layers, -1).unsqueeze(-1))).sum(-1)
    assert torch.equal(lens.final_rank, expected_rank)


def test_project_is_norm_then_unembed():
    resid = torch.randn(3, 4, 5)
    W = torch.randn(5, 7)
    out = project(resid, lambda x: 2 * x, lambda x: x @ W)
    torch.testing.assert_close(out, (2 * resid) @ W)


def test_lens_refuses_bad_input(tiny_gpt2):
    with pytest.raises(WorkbenchError, match="empty prompt"):
        logit_lens(tiny_gpt2, "")
    with pytest.raises(WorkbenchError, match="shorten it"):
        logit_lens(tiny_gpt2, "word " * 100)
    with pytest.raises(WorkbenchError, match="k must be"):
        logit_lens(tiny_gpt2, PROMPT, k=0)


@pytest.mark.slow
def test_lens_on_smollm2_ends_at_the_models_prediction(smollm2):
    lens = logit_lens(smollm2, PROMPT, k=1)
    assert lens.top_tokens[-1][-1][0] == " Mary"  # SmolLM2 completes the IOI prompt with the indirect object
    assert lens.top_ids.shape == (31, len(lens.str_tokens), 1)
    # the answer forms late: the embedding row does not already predict it
    assert lens.final_rank[0, -1] > 0


def test_predictions_and_lens_from_one_forward_pass(tiny_llama):
    from interp.lens import final_predictions, lens_residuals

    residuals = lens_residuals(tiny_llama, PROMPT)
    tokens, resid = residuals
    assert resid.shape == (tiny_llama.info.n_layers + 1, tokens.shape[-1], tiny_llama.info.d_model)
    preds = final_predictions(tiny_llama, resid, k=5)
    want = tiny_llama.top_predictions(PROMPT, 5)
    assert [t for t, _ in preds] == [t for t, _ in want]
    assert [p for _, p in preds] == pytest.approx([p for _, p in want], abs=1e-5)
    reused, fresh = logit_lens(tiny_llama, PROMPT, k=3, residuals=residuals), logit_lens(tiny_llama, PROMPT, k=3)
    assert torch.equal(reused.top_ids, fresh.top_ids) and torch.equal(reused.final_rank, fresh.final_rank)
    torch.testing.assert_close(reused.top_probs, fresh.top_probs)
