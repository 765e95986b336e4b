"""Following chosen tokens across the layers (interp.lens.follow_tokens): the pure read on a hand-made
row of logits, and the whole path on a tiny Llama against a hand computation through Hugging Face's
hidden states (final norm, lm_head, softmax, counting the tokens that score higher)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from interp import WorkbenchError
from interp.lens import follow_tokens, lens_residuals, logit_lens, read_tokens
from interp.viz.lens import token_trace_figure

PROMPT = "When Mary and John went to the store, John gave a drink to"


def test_read_tokens_by_hand():
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.0, 5.0]])
    picked, probs, ranks = read_tokens(logits, torch.tensor([2, 0]))
    assert picked.tolist() == [[2.0, 1.0], [5.0, 0.0]]
    z0, z1 = math.e + math.e**3 + math.e**2, 2 + math.e**5
    torch.testing.assert_close(probs, torch.tensor([[math.e**2 / z0, math.e / z0], [math.e**5 / z1, 1 / z1]]))
    assert ranks.tolist() == [[1, 2], [0, 1]]  # a tie is not above: token 0 of row 1 has rank 1 (only 5.0 beats it)


def _by_hand(folder, tokens: torch.Tensor, position: int, ids: list[int]):
    """Each layer's logits at `position` through HF: the embedding and every block's output through
    the final norm and lm_head (HF's last hidden state is normed already), then softmax and rank."""
    hf = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval()
    with torch.no_grad():
        out = hf(tokens, output_hidden_states=True)
        rows = [hf.lm_head(hf.model.norm(h[0, position])) for h in out.hidden_states[:-1]] + [out.logits[0, position]]
    want = []
    for row in rows:
        probs = row.softmax(-1)
        want.append([(float(row[i]), float(probs[i]), int((row > row[i]).sum())) for i in ids])
    return want


@pytest.mark.parametrize("position", [-1, 4])
def test_follow_tokens_against_hand_computation(tiny_llama, tiny_llama_dir, position):
    model = tiny_llama
    tokens = model.to_tokens(PROMPT)
    final = logit_lens(model, PROMPT, k=2)
    a, b = (int(i) for i in final.top_ids[-1, position])  # the model's own top two there
    trace = follow_tokens(model, PROMPT, [a, b], position=position)
    want = _by_hand(tiny_llama_dir, tokens.cpu(), position, [a, b])
    assert trace.layer_names == final.layer_names and trace.position == position % tokens.shape[-1]
    assert trace.input_token == model.to_str_tokens(tokens[0])[position]
    for layer, rows in enumerate(want):
        for j, (logit, p, rank) in enumerate(rows):
            assert trace.logits[layer, j].item() == pytest.approx(logit, abs=1e-4)
            assert trace.probs[layer, j].item() == pytest.approx(p, abs=1e-6)
            assert trace.ranks[layer, j].item() == rank
    assert trace.ranks[-1].tolist() == [0, 1]  # the last row is the model's own prediction
    torch.testing.assert_close(trace.logit_diff, trace.logits[:, 0] - trace.logits[:, 1])
    # the lens's own rank of the final prediction is the followed token's rank
    assert trace.ranks[:, 0].tolist() == final.final_rank[:, position].tolist()
    # by string, reusing the forward pass: the same numbers as by id
    mary = model.token_id(" Mary")
    by_text = follow_tokens(model, PROMPT, [" Mary"], position, residuals=lens_residuals(model, PROMPT))
    by_id = follow_tokens(model, PROMPT, [mary], position)
    torch.testing.assert_close(by_text.logits, by_id.logits)
    assert by_text.logit_diff is None and by_text.tokens == [" Mary"]
    fig = token_trace_figure(trace)
    assert fig.data[0].name.startswith("logit ") and " − logit " in fig.data[0].name
    assert list(fig.data[0].y) == pytest.approx(trace.logit_diff.tolist())
    assert fig.layout.yaxis3.type == "log"


def test_follow_tokens_refuses_bad_input(tiny_llama):
    with pytest.raises(WorkbenchError, match="outside the prompt"):
        follow_tokens(tiny_llama, PROMPT, [1], position=500)
    with pytest.raises(WorkbenchError, match="one token or two"):
        follow_tokens(tiny_llama, PROMPT, [1, 2, 3])
    with pytest.raises(WorkbenchError, match="not one"):
        follow_tokens(tiny_llama, PROMPT, [" Mary and John went"])
    with pytest.raises(WorkbenchError, match="token ids"):
        follow_tokens(tiny_llama, PROMPT, [10**9])
