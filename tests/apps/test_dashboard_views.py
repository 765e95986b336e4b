"""AppTests: every view renders on a tiny model and on SmolLM2, and the prompt changes what it shows;
bad input becomes an st.error and the app keeps working."""

from __future__ import annotations

import pytest

from dashboard_helpers import VIEWS, errors, figures, open_app, set_prompt, shown

PROMPT_A = "When Mary and John went to the store, John gave a drink to"
PROMPT_B = "The Eiffel Tower is located in the city of"


def _top_prediction(at) -> str:
    lines = [m.value for m in at.markdown if m.value.startswith("Top prediction")]
    assert len(lines) == 1, [m.value for m in at.markdown]
    return lines[0]


def test_model_view_tiny(tiny_llama_dir, tiny_llama):
    at = open_app(str(tiny_llama_dir), PROMPT_A)
    assert not errors(at)
    line = _top_prediction(at)
    n_a, n_b = (tiny_llama.to_tokens(p).shape[-1] for p in (PROMPT_A, PROMPT_B))
    expected, p = tiny_llama.top_predictions(PROMPT_A, 1)[0]
    assert f"after {n_a} tokens" in line and f"p = {p:.3f}" in line
    lens = figures(at)[1]["data"][0]
    assert len(lens["z"]) == 3 and len(lens["z"][0]) == n_a  # embed + 2 layers, one column per token
    assert lens["text"][-1][-1] == at.dataframe[0].value["token"][0].strip("'").replace(" ", "·")
    set_prompt(at, PROMPT_B)
    assert _top_prediction(at) != line and f"after {n_b} tokens" in _top_prediction(at)


@pytest.mark.parametrize("view", VIEWS[1:])
def test_view_renders_and_follows_prompt_tiny(view, tiny_llama_dir):
    at = open_app(str(tiny_llama_dir), PROMPT_A, page=view)
    assert not errors(at), errors(at)
    before = shown(at)
    assert before
    set_prompt(at, PROMPT_B)
    assert not errors(at), errors(at)
    assert shown(at) != before


def test_attention_view_shows_any_head(tiny_gpt2_dir):
    at = open_app(str(tiny_gpt2_dir), "a b c a b c", page="views/attention.py")
    at.number_input(key="attn_layer_input").set_value(1).run()
    at.number_input(key="attn_head_input").set_value(3).run()
    assert not at.exception and not errors(at)
    charts = figures(at)
    single, grid = charts
    assert single["layout"]["title"]["text"] == "L1H3"
    assert len(grid["data"]) == 4  # small multiples: every head of the layer
    z = single["data"][0]["z"]
    assert len(z) == 7 and all(abs(sum(row) - 1) < 1e-4 for row in z)  # BOS + 6 tokens, rows sum to 1
    assert "destination" in single["data"][0]["hovertemplate"] and "source" in single["data"][0]["hovertemplate"]


def test_bad_input_shows_error_and_app_recovers(tiny_llama_dir, tmp_path):
    at = open_app(str(tiny_llama_dir), PROMPT_A)
    set_prompt(at, "")
    assert any("empty prompt" in e for e in errors(at))
    set_prompt(at, "word " * 100)  # the tiny model reads 64 tokens
    assert any("shorten it" in e for e in errors(at))
    at.sidebar.text_input(key="model_custom").input(str(tmp_path / "missing")).run()
    assert any("does not exist" in e for e in errors(at))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')  # no weights: fails to load
    at.sidebar.text_input(key="model_custom").input(str(broken)).run()
    assert any("safetensors" in e for e in errors(at))
    for view in VIEWS[1:]:  # every view survives a model that fails to load
        at.switch_page(view).run()
        assert not at.exception, (view, [e.value for e in at.exception])
    at.switch_page("views/model.py").run()
    at.sidebar.text_input(key="model_custom").input(str(tiny_llama_dir)).run()
    set_prompt(at, PROMPT_B)
    assert not errors(at) and "Top prediction" in _top_prediction(at)
