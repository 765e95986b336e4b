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


def test_model_view_follows_a_token_and_a_difference(tiny_llama_dir, tiny_llama):
    """Issue 27: the lens follows a chosen token (the top prediction by default) across the layers at a
    position, or a logit difference, with the numbers interp.lens.follow_tokens gives; a token that is
    not one token is a one-line message and the page goes on."""
    from interp.lens import follow_tokens

    at = open_app(str(tiny_llama_dir), PROMPT)
    fig = figures(at)[2]
    top = tiny_llama.top_predictions(PROMPT, 1)[0][0]
    assert at.text_input(key="lens_token").value == top and fig["layout"]["title"]["text"].startswith(repr(top))
    n_pos = len(tiny_llama.to_str_tokens(PROMPT))
    assert at.number_input(key="lens_follow_pos").value == n_pos - 1
    at.text_input(key="lens_token").input(" Mary").run()
    at.text_input(key="lens_token_minus").input(" John").run()
    at.number_input(key="lens_follow_pos").set_value(5).run()
    want = follow_tokens(tiny_llama, PROMPT, [" Mary", " John"], 5)
    line = figures(at)[2]["data"][0]
    np.testing.assert_allclose(np.asarray(line["y"], dtype=float), want.logit_diff.numpy(), atol=1e-5, rtol=0)
    assert line["name"] == "logit ' Mary' − logit ' John'"
    assert any("logit difference" in c.value for c in at.caption)
    at.text_input(key="lens_token").input(" Mary and John").run()
    assert not at.exception and any("not one" in e.value for e in at.error)
    assert len(figures(at)) == 2  # the predictions and the lens still drawn


def test_followed_token_follows_a_new_prompt_until_typed(tiny_llama_dir, tiny_llama):
    from dashboard_helpers import set_prompt

    other = "The capital of France is the city of"
    at = open_app(str(tiny_llama_dir), PROMPT)
    set_prompt(at, other)
    assert at.text_input(key="lens_token").value == tiny_llama.top_predictions(other, 1)[0][0]
    at.text_input(key="lens_token").input(" Mary").run()
    set_prompt(at, PROMPT)
    assert at.text_input(key="lens_token").value == " Mary"  # typed: kept
