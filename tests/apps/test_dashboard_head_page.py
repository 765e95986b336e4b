"""AppTests of the Heads view's head page (issue 27): a click on any heatmap cell opens that head;
the head's ablation on the sidebar's prompt, its OV and QK top tokens; every verdict's reason."""

from __future__ import annotations

from dashboard_helpers import errors, figures, open_app, set_prompt, shown

PROMPT_A = "When Mary and John went to the store, John gave a drink to"
PROMPT_B = "The Eiffel Tower is located in the city of"
ABLATION, OV, QK = 1, 2, 3  # the page's tables after the heads table (AppTest does not expose a table's key)


def _click(at, layer: int, head: int):
    """What a click on a cell sends back: the selection of the cell's point (x = head, y = layer)."""
    at.session_state["heads_heatmap"] = {"selection": {"points": [{"x": head, "y": layer, "curve_number": 1,
                                                                    "point_number": layer * 4 + head}]}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_any_cell_opens_its_head_and_the_page_shows_it(tiny_llama_dir, tiny_llama):
    from interp.heads import page

    at = open_app(str(tiny_llama_dir), PROMPT_A, page="views/heads.py")
    assert not errors(at)
    heat = figures(at)[0]
    cells = [t for t in heat["data"] if t.get("name", "").endswith(" cells")]
    assert len(cells) == 3  # one clickable grid per kind, every cell of the 2 x 4 model in it
    assert sorted((int(c[0]), int(c[1])) for c in cells[0]["customdata"]) == [(la, h) for la in range(2) for h in range(4)]
    table = at.dataframe[0].value
    reported = set(zip(table["layer"], table["head"]))
    layer, head = next((la, h) for la in range(2) for h in range(4) if (la, h) not in reported)  # not a marker
    _click(at, layer, head)
    assert f"**L{layer}H{head}**" in shown(at) and not errors(at)
    assert (at.number_input(key="heads_layer").value, at.number_input(key="heads_head").value) == (layer, head)
    ring = next(t for t in figures(at)[0]["data"] if t.get("name") == "picked head")
    assert (list(ring["x"]), list(ring["y"])) == ([head], [layer])
    at.number_input(key="heads_head").set_value((head + 1) % 4).run()  # the boxes still work after a click
    assert f"**L{layer}H{(head + 1) % 4}**" in shown(at)
    head = (head + 1) % 4

    # ablation on the sidebar's prompt: the numbers are interp.heads.page's
    ablation = at.dataframe[ABLATION].value
    want = page.ablation_table(tiny_llama, page.prompt_ablation(tiny_llama, PROMPT_A, (layer, head)))
    assert list(ablation["ablation"]) == ["mean", "zero"]
    assert list(ablation["top before"]) == [w["top before"] for w in want]
    assert list(ablation["Δ mean loss (nats)"]) == [w["Δ mean loss (nats)"] for w in want]
    bars = next(f for f in figures(at) if f["layout"]["title"]["text"].endswith("per-token loss change on the prompt"))
    assert len(bars["data"]) == 2 and len(bars["data"][0]["y"]) == tiny_llama.to_tokens(PROMPT_A).shape[1] - 1

    # OV: one row per distinct prompt token; QK: the top 20 pairs
    ov = at.dataframe[OV].value
    sources = page.prompt_sources(tiny_llama, PROMPT_A)
    assert len(ov) == len(sources) and list(ov["source"]) == [page.decode(tiny_llama, i) for i in sources.tolist()]
    assert len(at.dataframe[QK].value) == 20
    text = shown(at)
    assert "reads KV head" in text and "Folded in" in text and "rotary is not applied" in text

    before = at.dataframe[ABLATION].value.to_dict()
    set_prompt(at, PROMPT_B)
    assert not errors(at) and at.dataframe[ABLATION].value.to_dict() != before
    assert f"**L{layer}H{head}**" in shown(at)  # the picked head stays


def test_checked_heads_say_why(tiny_llama_dir):
    at = open_app(str(tiny_llama_dir), PROMPT_A, page="views/heads.py", heads_validate=True)
    assert not errors(at)
    table = at.dataframe[0].value
    assert list(table.columns[:6]) == ["kind", "layer", "head", "score", "verdict", "why"]
    assert set(table["verdict"]) <= {"confirmed", "not confirmed", "flagged"} and all(table["why"])
    assert all(("score" in w and ("<" in w or "≥" in w)) for w in table["why"])
    rule = next(c.value for c in at.caption if c.value.startswith("**Confirmed** means"))
    assert "**why** column" in rule


def test_a_prompt_too_long_for_the_model_is_one_message(tiny_llama_dir):
    at = open_app(str(tiny_llama_dir), " word" * 80, page="views/heads.py")
    assert not at.exception and len(errors(at)) == 1 and "reads at most 64" in errors(at)[0]
    set_prompt(at, PROMPT_A)
    assert not errors(at) and at.dataframe[OV].value is not None
