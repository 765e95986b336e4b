"""Circuit view: an edge circuit for any task (IOI, greater-than, induction, a task file) by EAP-IG,
EAP or exact patching, with progress; a size slider over MIB's circuit sizes shows the circuit's
graph (click a node for its edges; pin, hide, group by head or layer) and marks it on the held-out
faithfulness curve; the strongest edges' estimates beside
their exact patched effects. Every circuit found is saved to the runs folder (edges.json and the
figures, as `interp circuit --out` writes them, with its settings) and can be opened again, as can
what the CLI wrote."""

from __future__ import annotations

import streamlit as st

from apps import state
from interp import WorkbenchError
from interp.circuits import cost, methods
from interp.circuits.faithfulness import MIB_PERCENTS
from interp.circuits.report import HEADLINE, circuit_heads, find_circuit, write_circuit
from interp.data.tasks import BUILTIN, IOI_CORRUPTION, MIN_HELDOUT, load_task, read_rows
from interp.runs import TITLES, open_edges, read_run
from interp.types import CORRUPTIONS
from interp.viz.circuits import exact_check_figure, faithfulness_figure
from interp.viz.graph import GROUPS, edge_graph, links, node_table, nodes_of

FILE = "a task file (.jsonl)"
FIND, OPEN = "find a circuit", "open a saved run"
BATCH_ROWS = 80  # find_circuit's default rows a forward+backward
MAX_PAIRS = 2000  # node pairs drawn at most (the strongest); the node table lists every edge


def bounded_circuit(model, split, method: str, steps: int, exact_top: int, progress):
    """find_circuit, after estimating its cost (one timed forward) and refusing a run the server's
    budget cannot hold: one visitor's run never holds the model for hours."""
    progress(0, 1, "estimating the cost")
    c = cost.estimate(model, split, method, steps, exact_top, BATCH_ROWS, len(MIB_PERCENTS))  # memory checked too
    state.check_minutes(c.seconds, f"this circuit ({c.summary()})")
    return find_circuit(model, split, method, steps, exact_top=exact_top, batch_size=BATCH_ROWS, n_boot=300,
                        progress=progress)  # fmt: skip


def find_panel(model, spec: str):
    """The task and method inputs and the run button (or the result saved for these settings);
    returns (report, its task's held-out pairs for the preview, the session key) or Nones."""
    c1, c2, c3, c4, c5 = st.columns([2, 2, 1, 1, 1])
    choice = c1.selectbox("Task", [*BUILTIN, FILE], key="circ_task")
    method = c2.selectbox("Method", methods.names(), key="circ_method",
                          help="; ".join(f"{m}: {methods.get(m).help}" for m in methods.names()))
    n_prompts = int(c3.number_input("Prompts", 2, 256, 16, key="circ_prompts", help="scoring prompts (as many held out)"))
    steps = int(c4.number_input("Steps", 1, 64, 5, key="circ_steps", help="EAP-IG integration steps"))
    exact_top = int(c5.number_input("Exact check", 0, 100, 10, key="circ_exact", help="strongest edges patched exactly"))
    task_spec, corruption = choice, None
    if choice == "ioi":
        corruption = st.radio("IOI counterfactual", CORRUPTIONS, index=CORRUPTIONS.index(IOI_CORRUPTION), horizontal=True,
                              key="circ_corruption", help="s2-io: MIB's (the second S becomes IO, so the answer flips); "
                              "abc: Wang et al.'s (three other names); new-s: both S become one new name. Scoring and "
                              "held-out prompts share it.")  # fmt: skip
    if choice == FILE:
        typed = st.text_input("Path to a .jsonl file of {clean, corrupted, answer, distractor} pairs", key="circ_file").strip()
        task_spec = str(state.user_path(typed, "task file")) if typed else ""
    key = ("circuit", spec, task_spec, corruption, method, n_prompts, steps, exact_top)
    settings = {"task": task_spec, "corruption": corruption, "method": method, "n_prompts": n_prompts, "steps": steps,
                "exact_top": exact_top}  # fmt: skip
    report = state.remembered(key)
    if report is not None:
        return report, [(a, b) for a, b in zip(report.split.heldout.prompts, report.split.heldout.corrupted_prompts)], key
    saved = state.saved_match("circuit", spec, settings) if task_spec else None
    label = "Find the circuit again" if saved else "Find the circuit"
    if task_spec and st.button(label, type="primary", key="circ_run"):
        if choice == FILE:
            read_rows(task_spec, min_heldout=MIN_HELDOUT)  # the file's checks, before any model work
        n_files = None if choice == FILE else n_prompts
        split = load_task(task_spec, model, n_files, None if choice == FILE else n_prompts, corruption=corruption)
        report = state.remember(key, "Finding the circuit", lambda progress: bounded_circuit(
            model, split, method, steps, exact_top, progress))
        pairs = [(a, b) for a, b in zip(split.heldout.prompts, split.heldout.corrupted_prompts)]
        state.save_result(key, "circuit", spec, settings, lambda tmp: write_circuit(report, tmp, d_model=model.info.d_model),
                          {"heldout_preview": pairs[:5]})  # fmt: skip
        return report, pairs, key
    if saved is not None:  # found with these settings before, in this session or another: opened, not recomputed
        report, _ = open_edges(saved.folder, model)
        state.opened_note(saved)
        return report, saved_preview(saved), None
    st.info("Pick a task and a method, then press **Find the circuit** (on CPU, SmolLM2 takes minutes).")
    return None, [], None


def saved_preview(run) -> list:
    """The held-out pairs a dashboard save kept in run.json (a CLI folder keeps none)."""
    import json

    try:
        extra = json.loads((run.folder / "run.json").read_text()).get("extra", {})
        return [tuple(p) for p in extra.get("heldout_preview", [])]
    except (OSError, ValueError, AttributeError, TypeError):
        return []


def open_panel(model):
    """Pick a saved edge circuit (the runs folder, ./out) or type an edges.json path."""
    from pathlib import Path

    runs = state.saved_runs("circuit", Path("out"))
    picked = state.pick_saved(runs, "circ_saved", "Saved edge circuit")
    typed = st.text_input("…or a path to edges.json (or its folder)", key="circ_path",
                          help="e.g. the folder `interp circuit --out` wrote").strip()
    if not (typed or picked):
        st.info(f"No saved edge circuit under {state.public(str(state.runs_root()))}/ or out/ yet: find one here "
                "(it is saved on its own) or run `interp circuit --out runs/NAME`; or type a path.")  # fmt: skip
        return None, []
    run = read_run(state.user_path(typed, "edges file")) if typed else picked
    if run.kind != "circuit":
        raise WorkbenchError(f"{str(run.folder)!r} holds a saved {TITLES[run.kind]}, not an edge circuit (edges.json)")
    report, _ = open_edges(run.folder, model)
    state.opened_note(run)
    return report, saved_preview(run)


def _clicked_node(options: list[str]) -> None:
    """A click on a node of the graph (its selection, from the last run) picks it in the node box; a
    click already applied is not applied again, so the box can be changed by hand afterwards."""
    event = st.session_state.get("circ_graph")
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    names = [p.get("customdata") for p in points if isinstance(p.get("customdata"), str)]
    if names and names[0] in options and st.session_state.get("_circ_last_click") != names[0]:
        st.session_state["circ_node"] = names[0]
    st.session_state["_circ_last_click"] = names[0] if names else None


def _keep_options(key: str, options: list[str]) -> None:
    """Drop a widget's remembered choices that are no longer offered (another size or grouping)."""
    value = st.session_state.get(key)
    if isinstance(value, list):
        st.session_state[key] = [v for v in value if v in options]
    elif value is not None and value not in options:
        st.session_state[key] = None


def graph_panel(report, percent: float, keep, faithfulness) -> None:
    """The circuit as a graph to explore: group by head or layer, pin or hide nodes, click a node (or
    pick it) for its incoming and outgoing edges with their scores."""
    g, s = report.scores.graph, report.scores
    c1, c2, c3 = st.columns([1, 2, 2])
    group = c1.radio("Group", list(GROUPS), key="circ_group", horizontal=True, format_func=lambda x: f"by {x}",
                     help="one node per head, or one per layer's heads")  # fmt: skip
    every = links(g, s.scores, keep, group)
    options = nodes_of(every)
    for key in ("circ_pin", "circ_hide", "circ_node"):
        _keep_options(key, options)
    pin = c2.multiselect("Pin nodes", options, key="circ_pin",
                         help="keep only the edges into and out of these nodes")  # fmt: skip
    hide = c3.multiselect("Hide nodes", options, key="circ_hide", help="leave these nodes and their edges out")
    _clicked_node(options)
    node = st.selectbox("Node", options, index=None, key="circ_node", placeholder="click a node in the graph, or pick one",
                        help="its incoming and outgoing edges in the circuit, with their scores, below the graph")  # fmt: skip
    fig = edge_graph(g, s.scores, keep, f"Circuit at {percent:g}% of edges ({s.method}, {s.task})", MAX_PAIRS,
                     group=group, pin=pin, hide=hide, selected=node, faithfulness=faithfulness)  # fmt: skip
    st.plotly_chart(fig, key="circ_graph", on_select="rerun", selection_mode="points")
    if node is not None:
        rows = node_table(every, node)
        into = sum(r["score"] for r in rows if r["direction"] == "in")
        out = sum(r["score"] for r in rows if r["direction"] == "out")
        st.markdown(f"**{node}**: {sum(r['direction'] == 'in' for r in rows)} edges in (scores sum to {into:+.4g}), "
                    f"{sum(r['direction'] == 'out' for r in rows)} out (sum {out:+.4g}), in the circuit at {percent:g}%")  # fmt: skip
        st.dataframe(rows, hide_index=True, key="circ_node_edges",
                     column_config={"score": st.column_config.NumberColumn(format="%+.4g")})  # fmt: skip


def draw(report, pairs: list) -> None:
    """The circuit: tiles, verdict, the prompts, the graph at the chosen size, the curve, the exact check."""
    g, s, c = report.scores.graph, report.scores, report.curve
    m = st.columns(4)
    percent = st.select_slider("Circuit size (% of edges)", options=list(MIB_PERCENTS), value=HEADLINE, key="circ_size")
    m[0].metric("Edges in the graph", f"{g.n_edges:,}")
    f, lo, hi = c.at(percent)  # the tile follows the slider
    m[1].metric(f"f at {percent:g}% of edges", f"{f:.2f}",
                help=f"faithfulness of the circuit drawn below (edges ranked by |score|) on the held-out prompts; "
                     f"95% bootstrap interval {lo:.2f} to {hi:.2f}")  # fmt: skip
    m[2].metric("CPR (signed ranking)", f"{report.cpr:.2f}",
                help="MIB's circuit performance ratio: the area under f over every circuit size, edges ranked by "
                     "their signed score (higher is better)")  # fmt: skip
    m[3].metric("CMD (|score| ranking)", f"{report.cmd:.2f}",
                help="MIB's circuit-model distance: the area under |1 - f| over every circuit size, edges ranked by "
                     "|score|, the ranking the circuit and the tile use (lower is better); CPR ranks differently")  # fmt: skip
    verdict = ("faithful at this size (f >= 0.8)" if lo >= 0.8 else "not shown faithful at this size (f's interval "
               "reaches below 0.8)" if f >= 0.8 else "**not faithful** at this size (f < 0.8)")  # fmt: skip
    st.caption(f"On the {c.n_heldout} held-out prompts: m(full) {c.m_full:.3f}, m(∅) {c.m_empty:.3f} "
               f"(f = 0 is the empty circuit, 1 the full model); {verdict}.")  # fmt: skip
    if pairs:
        with st.expander("The task's prompts (the first 5 held out)"):
            st.dataframe([{"clean": a, "corrupted": b} for a, b in pairs[:5]], hide_index=True, key="circ_preview")
    keep = report.circuit(percent)
    heads = circuit_heads(s, keep)
    corr = report.split.score.corruption if report.split is not None else None
    st.caption((f"Counterfactual: {corr}. " if corr else "") + f"{int(keep.sum()):,} edges after pruning to paths from the embedding to the logits; "
               f"heads used: {', '.join(f'{a}.{b}' for a, b in heads[:30])}{' …' if len(heads) > 30 else ''}")
    graph_panel(report, percent, keep, (f, lo, hi))
    st.plotly_chart(faithfulness_figure({"|score| ranking": c, "signed ranking": report.curve_signed},
                                        f"Faithfulness on {c.n_heldout} held-out prompts", highlight=percent),
                    key="circ_curve")  # fmt: skip
    if report.exact:
        ex = report.exact
        st.plotly_chart(exact_check_figure([r["estimate"] for r in ex], [r["exact"] for r in ex],
                                           [f"{r['src']}->{r['dst']}" for r in ex], f"{s.method} estimate vs exact patching"),
                        key="circ_exact_fig")  # fmt: skip
        st.dataframe(ex, hide_index=True, key="circ_exact_table")


st.title("Circuit")
spec = state.current_spec()
with state.shows_errors():
    model = state.get_model(spec)
    st.caption("Scores every edge (writer → input of a later head's q/k/v, an MLP or the logits) on the task's "
               "scoring prompts, then ablates every edge outside the top-n (the corrupted prompt's activation flows "
               "there instead) on held-out prompts: faithfulness f = (m(C) − m(∅)) / (m(M) − m(∅)), as in MIB.")
    mode = st.radio("Circuit", [FIND, OPEN], key="circ_mode", horizontal=True)
    if mode == FIND:
        report, pairs, key = find_panel(model, spec)
    else:
        (report, pairs), key = open_panel(model), None
    if report is not None:
        if key is not None:
            state.saved_note(key)
        draw(report, pairs)
