"""The ablation check of the ICL score: losses with heads ablated match a plainly written
ablation, and every head set gets its row."""

from __future__ import annotations

import pytest
import torch

from interp.dynamics import ablated_token_losses, icl_under_ablation
from interp.errors import WorkbenchError
from interp.train.metrics import per_token_loss


def test_ablated_token_losses_match_a_plainly_written_mean_ablation(tiny_llama):
    """Reference: one hook that overwrites the heads' z with means computed by a separate cached pass."""
    tokens = torch.randint(1, 100, (5, 12), generator=torch.Generator().manual_seed(0))
    heads = [(0, 1), (1, 0)]
    clean = ablated_token_losses(tiny_llama, tokens, [])
    assert torch.allclose(clean, per_token_loss(tiny_llama(tokens), tokens), atol=1e-5)

    _, cache = tiny_llama.run_with_cache(tokens)
    def overwrite(z, hook):
        layer = int(hook.name.split(".")[1])
        for l, h in heads:
            if l == layer:
                z[:, :, h] = cache[hook.name][:, :, h].mean((0, 1))
        return z
    names = {f"blocks.{l}.attn.hook_z" for l, _ in heads}
    logits = tiny_llama.run_with_hooks(tokens, fwd_hooks=[(n, overwrite) for n in names])
    fast = ablated_token_losses(tiny_llama, tokens, heads, batch_size=2)  # chunked means and forwards
    assert torch.allclose(fast, per_token_loss(logits, tokens), atol=1e-5)
    assert not torch.allclose(fast, clean, atol=1e-3)


def test_icl_under_ablation_reports_every_head_set(tiny_llama):
    tokens = torch.randint(1, 100, (4, 32), generator=torch.Generator().manual_seed(1))
    rows = icl_under_ablation(tiny_llama, tokens, {"induction": [(1, 0)], "other": [(1, 1)]}, mode="zero")
    assert [r["ablated"] for r in rows] == ["none", "induction", "other"]
    assert rows[1]["heads"] == [[1, 0]] and rows[0]["heads"] == []
    assert rows[0]["loss"] != rows[1]["loss"] and all(r["icl_score_se"] > 0 for r in rows)
    for r in rows:  # the score is the late band minus the early band
        assert r["icl_score"] == pytest.approx(r["loss_late"] - r["loss_early"], abs=1e-5)
    with pytest.raises(WorkbenchError, match="unknown ablation"):
        icl_under_ablation(tiny_llama, tokens, {"x": [(0, 0)]}, mode="resample")
    with pytest.raises(WorkbenchError, match=r"heads \[\(5, 0\)\] do not exist"):
        icl_under_ablation(tiny_llama, tokens, {"x": [(5, 0)]})
