"""Parity with TransformerLens 4.x `detect_head` on the same single sequence, both measures,
with and without TL's options. TL rounds "abs" scores to 3 decimals; we compare our unrounded
score with TL's once its rounding is switched off (module-level `round` patched), and our score
rounded the same way with TL's as shipped."""

from __future__ import annotations

import pytest
import torch
import transformer_lens.head_detector as hd

from interp.heads.detect import head_scores
from interp.heads.patterns import TL_NAMES

TEXT = "When Mary and John went to the store, Mary gave a drink to John. When Mary and John went to the store"


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
@pytest.mark.parametrize("measure", ["mul", "abs"])
def test_parity_with_detect_head(fixture, measure, request, monkeypatch):
    model = request.getfixturevalue(fixture)
    tokens = model.to_tokens(TEXT)
    assert torch.equal(tokens.cpu(), model.bridge.to_tokens(TEXT).cpu())
    for exclude_bos, exclude_current in [(False, False), (True, False), (False, True), (True, True)]:
        opts = {"exclude_bos": exclude_bos, "exclude_current_token": exclude_current, "error_measure": measure}
        ours = head_scores(model, tokens, tuple(TL_NAMES), exclude_bos=exclude_bos,
                           exclude_current_token=exclude_current, measure=measure)
        for kind, tl_name in TL_NAMES.items():
            if measure == "abs":
                with monkeypatch.context() as m:
                    m.setattr(hd, "round", lambda x, n: x, raising=False)
                    tl_exact = hd.detect_head(model.bridge, TEXT, tl_name, **opts).float()
                torch.testing.assert_close(ours[kind], tl_exact, atol=1e-5, rtol=0)
                tl = hd.detect_head(model.bridge, TEXT, tl_name, **opts).float()
                ours_rounded = 1 - torch.round((1 - ours[kind].double()) * 1000) / 1000
                torch.testing.assert_close(ours_rounded.float(), tl, atol=1e-5, rtol=0)
            else:
                tl = hd.detect_head(model.bridge, TEXT, tl_name, **opts).float()
                torch.testing.assert_close(ours[kind], tl, atol=1e-5, rtol=0)


def test_parity_on_repeated_tokens_through_a_cache(tiny_llama):
    """The probe data itself: TL given our tokens' cache (its `seq` only sets the length)."""
    from interp.data.synthetic import repeated_tokens

    tokens = repeated_tokens(tiny_llama, 1, 10, seed=2)
    _, cache = tiny_llama.bridge.run_with_cache(tokens, remove_batch_dim=True)
    ours = head_scores(tiny_llama, tokens, measure="mul")
    for kind, tl_name in TL_NAMES.items():
        pattern = getattr(hd, f"get_{tl_name}_detection_pattern")(tokens.cpu())
        text = tiny_llama.tokenizer.decode(tokens[0, 1:])
        class Shim:  # TL reads tokens from `seq`; hand it ours so the patterns agree
            cfg = tiny_llama.bridge.cfg
            def to_tokens(self, seq):
                return tokens
        tl = hd.detect_head(Shim(), text, pattern, cache=cache).float()
        torch.testing.assert_close(ours[kind], tl, atol=1e-5, rtol=0)


def test_target_is_mul_rescaled_by_the_rows_with_a_target(tiny_llama):
    """With rows summing to 1 and one target per row, target = mul * rows / rows with a target:
    on BOS + 2 x 10 tokens drawn without repeats, 21 / 10 for induction, 21 / 20 previous-token."""
    from interp.data.synthetic import repeated_tokens

    tokens = repeated_tokens(tiny_llama, 1, 10, seed=2)
    mul = head_scores(tiny_llama, tokens, measure="mul")
    target = head_scores(tiny_llama, tokens)
    torch.testing.assert_close(target["induction"], mul["induction"] * 21 / 10, atol=1e-5, rtol=0)
    torch.testing.assert_close(target["previous-token"], mul["previous-token"] * 21 / 20, atol=1e-5, rtol=0)
