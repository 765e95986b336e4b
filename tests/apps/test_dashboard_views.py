"""AppTests: every view renders on a tiny model and on SmolLM2, and the prompt changes what it shows;
bad input becomes an st.error and the app keeps working."""

from __future__ import annotations

import json

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
    _, p = tiny_llama.top_predictions(PROMPT_A, 1)[0]
    assert f"after {n_a} tokens" in line and f"p = {p:.3f}" in line
    lens = figures(at)[1]["data"][0]
    assert len(lens["z"]) == 3 and len(lens["z"][0]) == n_a  # embed + 2 layers, one column per token
    assert lens["text"][-1][-1] == at.dataframe[0].value["token"][0].strip("'").replace(" ", "·")
    set_prompt(at, PROMPT_B)
    assert _top_prediction(at) != line and f"after {n_b} tokens" in _top_prediction(at)


def _follows_prompt(at) -> None:
    """The page renders without error, and a new prompt changes what it shows."""
    assert not at.exception and not errors(at), errors(at)
    before = shown(at)
    set_prompt(at, PROMPT_A if at.session_state["prompt"] == PROMPT_B else PROMPT_B)
    assert not errors(at), errors(at)
    assert shown(at) != before


def test_attention_view_tiny(tiny_llama_dir):
    _follows_prompt(open_app(str(tiny_llama_dir), PROMPT_A, page="views/attention.py"))


def test_attention_view_hides_bos_and_renormalises(tiny_llama_dir, tiny_llama):
    """Issue 27: a head parked on BOS looked like one column. Hidden, the first token's row and
    column go and every row sums to 1 over the tokens left, in proportion to the original weights."""
    import numpy as np

    at = open_app(str(tiny_llama_dir), PROMPT_A, page="views/attention.py")
    full = np.array(figures(at)[0]["data"][0]["z"], dtype=float)
    n = len(tiny_llama.to_str_tokens(PROMPT_A))
    assert full.shape == (n, n)
    at.toggle(key="attn_hide_bos").set_value(True).run()
    assert not errors(at) and any(c.value.startswith("Hidden: the first token") for c in at.caption)
    single, grid = figures(at)
    hidden = np.array(single["data"][0]["z"], dtype=float)
    assert hidden.shape == (n - 1, n - 1) and single["layout"]["title"]["text"].endswith("first token hidden, renormalised")
    np.testing.assert_allclose(hidden.sum(-1), 1.0, atol=1e-5)
    rest = full[1:, 1:]
    np.testing.assert_allclose(hidden, rest / rest.sum(-1, keepdims=True), rtol=1e-4, atol=1e-6)
    assert len(grid["data"][0]["z"]) == n - 1  # the layer's grid too
    at.toggle(key="attn_hide_bos").set_value(False).run()
    np.testing.assert_allclose(np.array(figures(at)[0]["data"][0]["z"], dtype=float), full)


def test_heads_view_tiny(tiny_llama_dir):
    at = open_app(str(tiny_llama_dir), PROMPT_A, page="views/heads.py")
    heat = figures(at)[0]
    assert [a["text"] for a in heat["layout"]["annotations"]] == ["previous-token", "duplicate-token", "induction"]
    assert at.dataframe[0].value.shape[0] == 9  # top 3 of each kind
    assert len(at.metric) == 2  # the picked head's causal effect, both ablations
    _follows_prompt(at)
    at.number_input(key="heads_layer").set_value(1).run()
    at.number_input(key="heads_head").set_value(2).run()
    assert "**L1H2**" in shown(at) and not errors(at)
    rule = next(c.value for c in at.caption if c.value.startswith("**Confirmed** means"))
    assert "at least 0.5" in rule and "0.05 nats at the lower end of its 95% interval" in rule
    assert "Tick **Causal check**" in rule  # unvalidated: the page says why no head is confirmed
    at.multiselect(key="heads_kinds").set_value([]).run()
    assert any("no head kind" in e for e in errors(at))


def test_ioi_view_tiny(tiny_llama_dir, tiny_circuit):
    at = open_app(str(tiny_llama_dir), PROMPT_A, page="views/ioi.py")
    assert not errors(at) and any("Run discovery" in i.value for i in at.info)
    at.button(key="ioi_run").click().run()  # a 2-layer model cannot hold the circuit: a clear message
    assert any("needs at least 4" in e for e in errors(at)) and not at.exception
    at.radio(key="ioi_mode").set_value("open a saved run").run()
    at.text_input(key="ioi_json").input(str(tiny_circuit)).run()
    graph, prompt_rows = figures(at)
    assert {t["name"] for t in graph["data"] if t.get("name")} >= {"name mover", "s-inhibition", "logits"}
    assert len(prompt_rows["data"][0]["z"]) == 3  # one row per circuit head
    assert at.metric[1].value == "0.80"
    before = shown(at)  # the prompt panel follows the view's IOI sentence, not the sidebar's prompt
    at.text_input(key="ioi_text").set_value("After John and Anna went to the park, Anna gave a ball to").run()
    assert not errors(at) and shown(at) != before
    at.text_input(key="ioi_json").input(str(tiny_circuit.parent / "missing.json")).run()
    assert any("no circuit file" in e for e in errors(at))


def test_ioi_view_shows_places(tiny_llama_dir, tmp_path):
    """A circuit.json with places: the caption names them and the class-positions figure; a table lists
    each head's added segments."""
    path = tmp_path / "circuit.json"
    path.write_text(json.dumps({
        "model": "tiny", "classes": {"name mover": [[1, 2]], "induction": [[0, 3]]}, "faithfulness": 0.81,
        "faithfulness_ci": [0.7, 0.9], "faithfulness_all_positions": 0.85, "faithfulness_all_positions_ci": [0.75, 0.95],
        "faithfulness_class_positions": 0.74, "faithfulness_class_positions_ci": [0.6, 0.88], "n_heldout": 24, "n_abc": 64,
        "class_positions": {"name mover": "END", "induction": "S2"}, "config": {"position_threshold": 0.01},
        "places": {"1.2": ["S2", "after S2", "END"], "0.3": ["S2"]}, "clean_logit_diff": 3.0,
        "corrupted_logit_diff": -0.5}))  # fmt: skip
    at = open_app(str(tiny_llama_dir), PROMPT_A, page="views/ioi.py")
    at.radio(key="ioi_mode").set_value("open a saved run").run()
    at.text_input(key="ioi_json").input(str(path)).run()
    assert not at.exception
    text = " ".join(c.value for c in at.caption)
    assert "each head kept at its places" in text and "position threshold 0.01" in text and "0.74 [0.60, 0.88]" in text
    table = at.dataframe[0].value
    assert list(table["head"]) == ["1.2"] and list(table["also kept at"]) == ["S2, after S2"]


def _titles(at) -> list[str]:
    return [f.get("layout", {}).get("title", {}).get("text", "") for f in figures(at)]


def test_memories_view_tiny(tiny_llama_dir, tiny_index, tmp_path):
    at = open_app(str(tiny_llama_dir), PROMPT_A, page="views/memories.py", mem_dir=str(tiny_index))
    assert not errors(at), errors(at)
    assert any("Trigger examples" in m.value for m in at.markdown)
    names = _titles(at)
    assert any(n.startswith("value of L0 N0+") for n in names) and "FFN memories by layer" in names
    assert any(n.startswith("memories behind the prediction") for n in names)  # the trace panel
    at.radio(key="mem_sign").set_value("-").run()  # a gated MLP: both signs are memories
    assert not errors(at) and any(n.startswith("value of L0 N0-") for n in _titles(at))
    at.text_input(key="mem_search").input(at.session_state["mem_search"] or " the").run()
    assert not errors(at)
    _follows_prompt(at)  # the trace and intervention panels run on the prompt
    first = at.multiselect(key="mem_trace_off").options[0]
    at.multiselect(key="mem_trace_off").select(first).run()
    assert not errors(at) and any(f"With {first} off" in m.value and "new prediction" in m.value for m in at.markdown)
    at.number_input(key="mem_int_neuron").set_value(5).run()
    at.radio(key="mem_int_mode").set_value("on").run()
    assert not any("Memory L0 N5+" in n for n in _titles(at))  # nothing runs before its button
    at.button(key="mem_int_run").click().run()
    assert not errors(at) and any("Memory L0 N5+ on" in n for n in _titles(at))
    at.text_input(key="mem_dir").input(str(tmp_path / "no-index")).run()
    assert any("no memory index" in e for e in errors(at))
    assert any("Memory L0 N5+ on" in n for n in _titles(at))  # the other panels still work


def test_memories_view_input_errors_leave_the_page_working(tiny_llama_dir, tmp_path):
    at = open_app(str(tiny_llama_dir), PROMPT_A, page="views/memories.py")
    assert not errors(at), errors(at)
    at.text_input(key="mem_out").input(str(tmp_path / "index")).run()
    for layers, message in (("abc", "bad layers 'abc'"), ("10-15", "layer 15 is out of range"), ("3-1", "bad layers")):
        at.text_input(key="mem_layers").input(layers).run()
        at.button(key="mem_build").click().run()
        assert not at.exception and [e for e in errors(at) if message in e], errors(at)
        assert any(n.startswith("memories behind the prediction") for n in _titles(at))
        assert at.button(key="mem_int_run").label == "Switch L0 N0+ off"  # the intervention panel is still there
    assert not (tmp_path / "index").exists()
    set_prompt(at, "   ")  # whitespace only: both prompt panels say so, the same way
    want = "empty prompt: type some text (not only spaces) to run the model on"
    assert [e for e in errors(at) if "empty prompt" in e] == [want]  # the trace; the intervention waits for its button
    at.button(key="mem_int_run").click().run()
    assert [e for e in errors(at) if "empty prompt" in e] == [want] * 2
    set_prompt(at, PROMPT_B)
    at.button(key="mem_int_run").click().run()
    assert not errors(at) and any(n.startswith("Memory L0 N0+ off") for n in _titles(at))


def test_memories_intervention_waits_for_its_button_and_shows_the_memorys_own_coefficient(tiny_llama_dir, tiny_llama):
    """Issue 27: the intervention panel ran L0 N0+ as the page opened, and for a "+" memory showed the
    neuron's negative coefficient. Now it runs on its button, and shows the memory's own coefficient
    (0 for a "+" memory whose neuron is negative there, with a note; |c| for its "-" memory)."""
    from interp.memories.trace import contributions

    coefs = contributions(tiny_llama, tiny_llama.to_tokens(PROMPT_A)).coefficients[0]
    neuron = int(coefs.argmin())
    c = float(coefs[neuron])
    assert c < 0
    at = open_app(str(tiny_llama_dir), PROMPT_A, page="views/memories.py")
    assert not errors(at) and not any(n.startswith("Memory L0") for n in _titles(at))
    assert any("press the button" in i.value for i in at.info) and not at.metric
    at.number_input(key="mem_int_neuron").set_value(neuron).run()
    assert at.button(key="mem_int_run").label == f"Switch L0 N{neuron}+ off"
    at.button(key="mem_int_run").click().run()
    assert not errors(at), errors(at)
    tile = at.metric[0]
    assert tile.label == f"L0 N{neuron}+'s coefficient at the last token" and tile.value == "0.000"
    assert f"{c:.3f}" in tile.help and any("memory is the active one" in x.value for x in at.caption)
    at.radio(key="mem_int_sign").set_value("-").run()
    assert not any(f"N{neuron}-" in n for n in _titles(at))
    at.button(key="mem_int_run").click().run()
    assert at.metric[0].value == f"{-c:.3f}" and any(f"Memory L0 N{neuron}- off" in n for n in _titles(at))


def test_memories_trace_names_its_ranking_and_shows_total_effects(tiny_llama_dir):
    at = open_app(str(tiny_llama_dir), PROMPT_A, page="views/memories.py")
    assert any("Ranked by **direct effect on the predicted token" in m.value for m in at.markdown)
    table = at.dataframe[0].value
    measured = table["total effect"].notna().tolist()
    assert measured == [True] * 5 + [False] * (len(table) - 5)  # the first five rows, switched off one by one
    assert any(c.startswith("rank of") for c in table.columns)
    direct = table["direct effect"].tolist()
    assert direct == sorted(direct, reverse=True)
    at.radio(key="mem_trace_rank").set_value("lm-debugger").run()
    assert not errors(at) and any("Ranked by **LM-Debugger's ranking" in m.value for m in at.markdown)
    scores = at.dataframe[0].value["|coef| × value norm"].tolist()
    assert scores == sorted(scores, reverse=True)


def test_training_view_tiny(tiny_run):
    at = open_app("", PROMPT_A, page="views/training.py", train_dir=str(tiny_run))
    assert not errors(at), errors(at)
    curves = figures(at)[0]
    assert [list(t["x"]) for t in curves["data"][:1]] == [[10, 20]]
    assert any("Step **20**" in m.value for m in at.markdown)
    _follows_prompt(at)
    before = shown(at)
    at.select_slider(key="train_step").set_value(10).run()
    assert not errors(at) and any("Step **10**" in m.value for m in at.markdown) and shown(at) != before
    at.text_input(key="train_dir").input(str(tiny_run / "nope")).run()
    assert any("does not exist" in e for e in errors(at))


def test_training_view_compares_runs_across_the_induction_jump(tiny_run, tmp_path):
    import json

    def log(path, induction, icl):
        path.mkdir()
        path.joinpath("metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "eval_loss": 3.0, "icl_score": icl(s), "repeat_bigram_gap": -1.0,
                        "induction_score": induction(s), "prev_token_score": 0.1}) + "\n" for s in range(0, 1000, 20)))
        return path

    two = log(tmp_path / "two", lambda s: 0.01 if s < 400 else 0.45, lambda s: -0.1 if s < 400 else -0.2)
    one = log(tmp_path / "one", lambda s: 0.01, lambda s: -0.1)
    at = open_app("", PROMPT_A, page="views/training.py", train_dir=str(two))
    assert not errors(at), errors(at)
    at.text_input(key="train_compare_dirs").input(f"{one}").run()
    assert not errors(at), errors(at)
    fig = figures(at)[1]
    assert {t["name"] for t in fig["data"]} == {"two", "one"} and len(fig["layout"]["shapes"]) == 3
    table = at.dataframe[0].value
    assert list(table["run"]) == ["two", "one"]
    assert list(table["icl_score change"]) == pytest.approx([-0.1, 0.0])
    at.text_input(key="train_compare_dirs").input(str(tmp_path / "missing")).run()
    assert any("has no metrics.jsonl" in e for e in errors(at))


def test_inhouse_checkpoint_as_model(tiny_run):
    at = open_app(str(tiny_run / "checkpoint-20"), PROMPT_A)
    assert not errors(at) and "source=inhouse" in shown(at)


def test_attention_view_shows_any_head(tiny_gpt2_dir):
    at = open_app(str(tiny_gpt2_dir), "a b c a b c", page="views/attention.py")
    at.number_input(key="attn_layer").set_value(1).run()
    at.number_input(key="attn_head").set_value(3).run()
    assert not at.exception and not errors(at)
    charts = figures(at)
    single, grid = charts
    assert single["layout"]["title"]["text"] == "L1H3"
    assert sum(t["type"] == "heatmap" for t in grid["data"]) == 4  # small multiples: every head of the layer
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


@pytest.mark.slow
def test_every_view_on_smollm2(tiny_run, tmp_path):
    """SmolLM2 (the default model) through every view, one AppTest session; each view follows the prompt."""
    circuit = tmp_path / "circuit.json"
    circuit.write_text('{"classes": {"name mover": [[9, 6], [10, 7]], "s-inhibition": [[7, 3]]}, "faithfulness": 0.5}')
    at = open_app("", PROMPT_A)  # the default model
    assert "smollm2-135m" in shown(at) and "Mary" in _top_prediction(at)
    set_prompt(at, PROMPT_B)
    assert "Paris" in _top_prediction(at)
    lens = figures(at)[1]["data"][0]
    assert len(lens["z"]) == 31 and lens["text"][-1][-1] == "·Paris"

    at.switch_page("views/attention.py").run()
    at.number_input(key="attn_layer").set_value(9).run()
    single, grid = figures(at)
    assert single["layout"]["title"]["text"] == "L9H0" and sum(t["type"] == "heatmap" for t in grid["data"]) == 9
    _follows_prompt(at)

    at.switch_page("views/heads.py").run()
    assert not errors(at) and figures(at)[0]["layout"]["title"]["text"] == "Head pattern scores"
    _follows_prompt(at)

    at.switch_page("views/ioi.py").run()
    at.radio(key="ioi_mode").set_value("open a saved run").run()
    at.text_input(key="ioi_json").input(str(circuit)).run()
    assert len(figures(at)) == 2
    before = shown(at)  # the IOI view's own sentence drives its prompt panel
    at.text_input(key="ioi_text").set_value("Then, Sarah and Tom went to the school. Tom gave a book to").run()
    assert not errors(at) and shown(at) != before

    at.switch_page("views/memories.py").run()
    assert not errors(at)
    at.text_input(key="mem_out").input(str(tmp_path / "index")).run()
    at.number_input(key="mem_tokens").set_value(256).run()
    at.text_input(key="mem_layers").input("0").run()
    at.button(key="mem_build").click().run()  # builds with a progress bar, then opens it
    assert not errors(at), errors(at)
    assert at.text_input(key="mem_dir").value == str(tmp_path / "index")
    assert any("Trigger examples" in m.value for m in at.markdown)
    _follows_prompt(at)

    at.switch_page("views/training.py").run()
    at.text_input(key="train_dir").input(str(tiny_run)).run()
    _follows_prompt(at)


def test_ioi_view_draws_a_discovery_report(tiny_llama_dir, monkeypatch, runs_folder):
    """The discovery branch end to end with a stand-in for run_ioi (a 2-layer random model holds no
    circuit): progress is reported, and the graph, heatmaps and completeness table are drawn."""
    import torch

    from interp.circuits import pipeline
    from interp.circuits.discover import Discovery
    from interp.circuits.evaluate import Evaluation

    calls = []

    def fake_run_ioi(model, n_prompts, seed=0, checks=True, progress=None, corruption="abc", config=None):
        for i in range(3):
            progress(i + 1, 3, "path patching")
        calls.append((n_prompts, seed, checks, corruption, config.threshold))
        effect = torch.zeros(2, 4)
        effect[1, 2], effect[0, 0] = -0.4, float("nan")
        movers = torch.zeros(2, 4)
        movers[0, 3] = -0.2  # half the name mover's effect: half as wide above the thinnest
        disc = Discovery({"name mover": [(1, 2)], "s-inhibition": [(0, 3)]}, [((1, 2), "name mover"), ((0, 3), "s-inhibition")], {"logits": effect, "mover queries": movers},
                         {}, 2.5, -0.5)
        ev = Evaluation(2.4, 1.9, 1.9 / 2.4, n_prompts, completeness=[{"removed": "nothing", "gap": 0.1}],
                        curve=[{"k": 1, "head": [1, 2], "class": "name mover", "value": 0.5, "lo": 0.4, "hi": 0.6},
                               {"k": 2, "head": [0, 3], "class": "s-inhibition", "value": 0.8, "lo": 0.7, "hi": 0.9}])
        return pipeline.IOIReport("tiny", seed, n_prompts, n_prompts, disc, ev, corruption)

    monkeypatch.setattr(pipeline, "run_ioi", fake_run_ioi)
    at = open_app(str(tiny_llama_dir), PROMPT_A, page="views/ioi.py")
    at.number_input(key="ioi_prompts").set_value(6).run()
    at.radio(key="ioi_corruption").set_value("s2-io").run()
    at.number_input(key="ioi_threshold").set_value(0.25).run()
    at.button(key="ioi_run").click().run()
    assert not errors(at) and calls == [(6, 0, False, "s2-io", 0.25)]
    titles = [f["layout"]["title"]["text"] for f in figures(at)]
    assert titles[0].startswith("IOI circuit in") and "Path patching to logits" in titles
    assert any(t.startswith("Faithfulness against heads kept") for t in titles)  # the curve, from the report
    assert at.metric[1].value == f"{1.9 / 2.4:.2f}" and at.dataframe[0].value.shape[0] == 1
    assert at.metric[3].label == "Corrupted (s2-io) logit diff"  # the counterfactual is named
    # the prompt panel runs the view's own IOI sentence, not the sidebar's (non-IOI) prompt
    box = at.text_input(key="ioi_text")
    assert box.value.startswith("When Mary and John") and "Mary" in shown(at)
    before = shown(at)
    set_prompt(at, PROMPT_B)  # the sidebar's prompt changes nothing here
    assert not errors(at) and shown(at) == before
    at.text_input(key="ioi_text").set_value("After John and Anna went to the park, Anna gave a ball to").run()
    assert not errors(at) and shown(at) != before  # the report is kept; only the prompt panel changes
    assert calls == [(6, 0, False, "s2-io", 0.25)]
    # issue 27: the class graph's edges are weighted by the effect that admitted them, hover says more
    graph = figures(at)[0]
    lines = {t["name"]: t["line"] for t in graph["data"] if t.get("mode") == "lines"}
    assert lines["1.2 -> logits"]["width"] == 8.0 and lines["0.3 -> 1.2"]["width"] == 4.5  # 1 + 7 |e| / max |e|
    assert "dash" not in lines["1.2 -> logits"] or lines["1.2 -> logits"]["dash"] != "dot"
    mover = next(t for t in graph["data"] if t.get("name") == "name mover")
    assert list(mover["customdata"][0]) == ["name mover", "END", "path patching to the logits: -0.400"]
    # a fresh session opens the save with the same weighted graph (the effects kept in run.json)
    (folder,) = runs_folder.glob("ioi-*")
    assert json.loads((folder / "run.json").read_text())["extra"]["effects"]["logits"][0][0] is None  # NaN kept as null
    fresh = open_app(str(tiny_llama_dir), PROMPT_A, page="views/ioi.py", ioi_prompts=6, ioi_corruption="s2-io",
                     ioi_threshold=0.25)  # fmt: skip
    assert not errors(fresh) and any("Opened" in c.value for c in fresh.caption)
    assert figures(fresh)[0]["data"] == graph["data"] and calls == [(6, 0, False, "s2-io", 0.25)]


@pytest.mark.slow
def test_long_prompt_is_drawn_capped(smollm2):
    """A 5,000-character prompt (about a thousand tokens) once kept the Attention view busy for
    minutes and then failed with MessageSizeError: only the last tokens are drawn, and the page says so."""
    from apps.state import MAX_DRAWN_TOKENS

    long = "In the beginning God created the heaven and the earth. " * 90  # ~5,000 characters
    n = smollm2.to_tokens(long).shape[-1]
    assert n > MAX_DRAWN_TOKENS
    at = open_app("", long, page="views/attention.py")
    assert not errors(at) and not at.exception
    single, _grid = figures(at)
    assert len(single["data"][0]["z"]) == MAX_DRAWN_TOKENS == len(single["data"][0]["z"][0])
    assert any(f"The prompt has {n} tokens" in c.value for c in at.caption)
    at.switch_page("views/model.py").run()
    assert not errors(at) and not at.exception
    lens = figures(at)[1]["data"][0]
    assert len(lens["z"]) == 31 and len(lens["z"][0]) == 24  # the default 24 last positions
