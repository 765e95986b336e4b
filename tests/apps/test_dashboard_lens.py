"""The Model view's logit lens figure shows exactly what the plain per-layer reference computes
(the view asks the fast lens for the top-1 only, at the last positions), and the view's top
predictions are the model's own."""

from __future__ import annotations

import numpy as np
from dashboard_helpers import figures, open_app

from interp.lens import logit_lens_reference
from interp.viz.attention import token_labels

PROMPT = "When Mary and John went to the store, John gave a drink to"


def test_model_view_lens_equals_the_reference(tiny_llama_dir, tiny_llama):
    at = open_app(str(tiny_llama_dir), PROMPT)
    lens = figures(at)[1]["data"][0]
    ref = logit_lens_reference(tiny_llama, PROMPT, k=1)
    np.testing.assert_allclose(np.asarray(lens["z"], dtype=float), ref.top_probs[..., 0].numpy(), atol=1e-6, rtol=0)
    assert [list(row) for row in lens["text"]] == [token_labels([t[0] for t in row]) for row in ref.top_tokens]
    ranks = np.asarray([[cell[2] for cell in row] for row in lens["customdata"]], dtype=int)
    assert np.array_equal(ranks, ref.final_rank.numpy())
    want = tiny_llama.top_predictions(PROMPT, 10)
    assert list(at.dataframe[0].value["token"]) == [repr(t) for t, _ in want]
