"""Issue 18's dashboard cases, in one AppTest session on the tiny 4-layer Llama (2048-token context):
every bad input shows a message on the page and no exception reaches it, and the page keeps
working afterwards."""

from __future__ import annotations

import json

from dashboard_helpers import VIEWS, errors, figures, open_app, set_prompt

PROMPT = "When Mary and John went to the store, John gave a drink to"
LONG = "In the beginning God created the heaven and the earth. " * 90  # ~5,000 characters, ~1,000 tokens
TOO_LONG = LONG * 4  # more tokens than the model's 2048


def _ok(at, *, error: str | None = None) -> None:
    """No exception on the page; with `error`, a visible message containing it."""
    assert not at.exception, [e.value for e in at.exception]
    if error is not None:
        assert any(error in e for e in errors(at)), errors(at)


def test_bad_inputs_show_a_message_and_no_exception(tiny_llama4_dir, tmp_path):
    from apps.state import MAX_DRAWN_TOKENS

    at = open_app(str(tiny_llama4_dir), PROMPT)
    _ok(at)

    # a 5,000-character prompt: the Model view reads it, the Attention view draws its last tokens and says so
    set_prompt(at, LONG)
    _ok(at)
    assert not errors(at) and any(m.value.startswith("Top prediction") for m in at.markdown)
    at.switch_page("views/attention.py").run()
    _ok(at)
    single = figures(at)[0]
    assert len(single["data"][0]["z"]) == MAX_DRAWN_TOKENS == len(single["data"][0]["z"][0])
    assert any(c.value.startswith("The prompt has") and f"the last {MAX_DRAWN_TOKENS}" in c.value for c in at.caption)
    set_prompt(at, TOO_LONG)  # beyond the context: refused with the fix named
    _ok(at, error="shorten it")

    # whitespace only, on every view: a message where the prompt is used, never an exception
    set_prompt(at, " \n\t ")
    for view in VIEWS:
        at.switch_page(view).run()
        _ok(at)
    at.switch_page("views/model.py").run()
    _ok(at, error="empty prompt")
    at.switch_page("views/attention.py").run()
    _ok(at, error="empty prompt")
    set_prompt(at, PROMPT)

    # IOI: the prompt box at 1 and 2 (it starts at 1) runs discovery on this 4-layer model
    at.switch_page("views/ioi.py").run()
    for n in (1, 2):
        at.number_input(key="ioi_prompts").set_value(n).run()
        at.button(key="ioi_run").click().run()
        _ok(at)
        assert not errors(at) and at.metric[0].label == "Heads in the circuit", errors(at)

    # memories: the Build box's layers `abc` and `10-15` (the CLI's range syntax; this model has 4
    # layers), and an output folder that is a file; the intervention panel stays on the page
    at.switch_page("views/memories.py").run()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    at.text_input(key="mem_out").input(str(tmp_path / "index")).run()
    for layers, message in (("abc", "bad layers 'abc'"), ("10-15", "out of range")):
        at.text_input(key="mem_layers").input(layers).run()
        at.button(key="mem_build").click().run()
        _ok(at, error=message)
        assert at.button(key="mem_int_run").label == "Switch L0 N0+ off"  # the panel is there, waiting for its button
    at.text_input(key="mem_layers").input("0").run()
    at.text_input(key="mem_out").input(str(blocker)).run()
    at.button(key="mem_build").click().run()
    _ok(at, error="is a file")
    assert not (tmp_path / "index").exists() and blocker.read_text() == "x"

    # circuit: a task file whose pairs tokenize to different lengths
    bad = tmp_path / "pairs.jsonl"
    rows = [{"clean": "x y z", "corrupted": "x y w", "answer": " a"}, {"clean": "a b c d", "corrupted": "a b", "answer": " e"},
            {"clean": "x y q", "corrupted": "x y w", "answer": " a"}, {"clean": "x y r", "corrupted": "x y w", "answer": " a"}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    at.switch_page("views/circuit.py").run()
    at.selectbox(key="circ_task").set_value(at.selectbox(key="circ_task").options[-1]).run()
    at.text_input(key="circ_file").input(str(bad)).run()
    at.button(key="circ_run").click().run()
    _ok(at, error="tokenize to the same length")
