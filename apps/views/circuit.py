"""Circuit view: an edge circuit for any task (IOI, greater-than, induction, a task file) by EAP-IG,
EAP or exact patching, with progress, on our graph or MIB's ungrouped one (interp.circuits.ungroup;
every figure names the graph and its edge count), with scoring draws (the pooled interval) and MIB's
Random row beside the curve and in the tiles; a size slider over MIB's circuit sizes shows the circuit's
graph (click a node for its edges; pin, hide, group by head or layer) and marks it on the held-out
faithfulness curve, with the verdict at that size (faithful or not, and why: interp.circuits.verdict, the
rule `interp circuit` prints); the checked edges' estimates beside their exact patched effects. For IOI, the
circuit under both counterfactuals (MIB's S2 -> IO, Wang et al.'s ABC) side by side. Every circuit
found is saved to the runs folder (edges.json and the figures, as `interp circuit --out` writes them,
with its settings) and can be opened again, as can what the CLI wrote."""

from __future__ import annotations

import streamlit as st

from apps import state
from interp import WorkbenchError
from interp.circuits import cost, methods
from interp.circuits.faithfulness import MIB_PERCENTS
from interp.circuits.report import HEADLINE, circuit_heads, find_circuit, write_circuit
from interp.circuits.ungroup import GRAPH_HELP, GRAPHS
from interp.circuits.verdict import circuit_verdict
from interp.data.tasks import BUILTIN, IOI_CORRUPTION, MIN_HELDOUT, load_task, read_rows
from interp.runs import TITLES, open_edges, read_run
from interp.types import CORRUPTIONS
from interp.viz.circuits import exact_check_figure, faithfulness_figure
from interp.viz.graph import GROUPS, edge_graph, links, node_table, nodes_of

FILE = "a task file (.jsonl)"
FIND, OPEN = "find a circuit", "open a saved run"
BATCH_ROWS = 80  # find_circuit's default rows a forward+backward
MAX_PAIRS = 2000  # node pairs drawn at most (the strongest); the node table lists every edge
GRAPH_LABELS = {"grouped": "ours (k/v per KV head)", "mib": "MIB's (q/k/v per query head)"}
BOTH = ("s2-io", "abc")  # IOI's two counterfactuals, side by side: MIB's and Wang et al.'s
SWITCH_NOTE = ("S2 -> IO (MIB's) keeps the clean and corrupted prompts identical up to S2, so it cannot test "
               "anything that acts before S2; the default was switched from ABC to S2 -> IO on 2026-12-02 "
               "(benchmarks/RESULTS.md has the history).")  # fmt: skip


def bounded_circuit(model, split, method: str, steps: int, exact_top: int, progress, graph: str = "grouped",
                    draws: int = 1):  # fmt: skip
    """find_circuit on `graph` (MIB's: the model ungrouped, interp.circuits.ungroup) with `draws` scoring
    draws, after estimating its cost (one timed forward) and refusing a run the server's budget cannot
    hold: one visitor's run never holds the model for hours."""
    from interp.circuits.ungroup import ungrouped

    if graph == "mib":
        progress(0, 1, "ungrouping the keys and values (MIB's graph)")
        model = ungrouped(model)
    progress(0, 1, "estimating the cost")
    n_sizes = len({*MIB_PERCENTS, HEADLINE})
    c = cost.estimate(model, split, method, steps, exact_top, BATCH_ROWS, n_sizes, random_draws=3)  # memory checked too
    if draws > 1:  # each draw scores again and runs the |score| curve's sizes once more (as `interp circuit`)
        c.stages["scoring draws"] = (draws - 1) * (c.stages["scores"] + len(split.heldout) * n_sizes)
    state.check_minutes(c.seconds, f"this circuit ({c.summary()})")
    return find_circuit(model, split, method, steps, exact_top=exact_top, batch_size=BATCH_ROWS, n_boot=300,
                        progress=progress, random_draws=3, scoring_draws=draws, graph_name=graph)  # fmt: skip


def circuit_settings(task_spec: str, corruption, method: str, n_prompts: int, steps: int, exact_top: int, graph: str,
                     draws: int) -> dict:  # fmt: skip
    """The settings a circuit is saved and found again by. The graph and the scoring draws are named only
    when not the defaults, so circuits saved before they could be chosen are still found."""
    settings = {"task": task_spec, "corruption": corruption, "method": method, "n_prompts": n_prompts, "steps": steps,
                "exact_top": exact_top}  # fmt: skip
    if graph != "grouped":
        settings["graph"] = graph
    if draws != 1:
        settings["scoring_draws"] = draws
    return settings


def one_circuit(model, spec: str, settings: dict, run: bool, is_file: bool = False):
    """The circuit for `settings`: kept from this session, found now (`run`; saved to the runs folder), or
    opened from a save with the same settings; returns (report, held-out pairs, session key, saved run)
    with report None when none is at hand (the saved run, or None, says whether one could be opened)."""
    t, corruption, n = settings["task"], settings["corruption"], settings["n_prompts"]
    graph, draws = settings.get("graph", "grouped"), settings.get("scoring_draws", 1)
    key = ("circuit", spec, t, corruption, settings["method"], n, settings["steps"], settings["exact_top"], graph, draws)
    report = state.remembered(key)
    if report is not None:
        return report, [(a, b) for a, b in zip(report.split.heldout.prompts, report.split.heldout.corrupted_prompts)], key, None
    saved = state.saved_match("circuit", spec, settings) if t else None
    if run:
        if is_file:
            read_rows(t, min_heldout=MIN_HELDOUT)  # the file's checks, before any model work
        split = load_task(t, model, None if is_file else n, None if is_file else n, corruption=corruption)
        report = state.remember(key, "Finding the circuit", lambda progress: bounded_circuit(
            model, split, settings["method"], settings["steps"], settings["exact_top"], progress, graph, draws))
        pairs = [(a, b) for a, b in zip(split.heldout.prompts, split.heldout.corrupted_prompts)]
        state.save_result(key, "circuit", spec, settings, lambda tmp: write_circuit(report, tmp, d_model=model.info.d_model),
                          {"heldout_preview": pairs[:5]})  # fmt: skip
        return report, pairs, key, None
    if saved is not None:  # found with these settings before, in this session or another: opened, not recomputed
        report, _ = open_edges(saved.folder, model)
        return report, saved_preview(saved), None, saved
    return None, [], key, None


def find_panel(model, spec: str):
    """The task and method inputs and the run button (or the result saved for these settings);
    returns (report, its task's held-out pairs for the preview, the session key, the settings) or Nones."""
    c1, c2, c3, c4, c5 = st.columns([2, 2, 1, 1, 1])
    choice = c1.selectbox("Task", [*BUILTIN, FILE], key="circ_task")
    method = c2.selectbox("Method", methods.names(), key="circ_method",
                          help="; ".join(f"{m}: {methods.get(m).help}" for m in methods.names()))
    n_prompts = int(c3.number_input("Prompts", 2, 256, 16, key="circ_prompts", help="scoring prompts (as many held out)"))
    steps = int(c4.number_input("Steps", 1, 64, 5, key="circ_steps", help="EAP-IG integration steps"))
    exact_top = int(c5.number_input("Exact check", 0, 100, 10, key="circ_exact", help="strongest edges patched exactly"))
    g1, g2 = st.columns([3, 1])
    graph = g1.radio("Graph", GRAPHS, key="circ_graph_kind", horizontal=True, format_func=GRAPH_LABELS.get,
                     help="; ".join(f"{k}: {GRAPH_HELP[k]}" for k in GRAPHS) + ". \"5%\", CPR and CMD are "
                          "measured on the chosen graph (on a model without grouped queries both are one graph)")  # fmt: skip
    draws = int(g2.number_input("Scoring draws", 1, 10, 1, key="circ_draws",
                                help="score again on this many - 1 bootstrap resamples of the scoring prompts: f's "
                                     "interval then carries the scoring prompts' variance too (1: held-out prompts "
                                     "only; each draw costs one more scoring)"))  # fmt: skip
    task_spec, corruption = choice, None
    if choice == "ioi":
        corruption = st.radio("IOI counterfactual", CORRUPTIONS, index=CORRUPTIONS.index(IOI_CORRUPTION), horizontal=True,
                              key="circ_corruption", help="s2-io: MIB's (the second S becomes IO, so the answer flips); "
                              "abc: Wang et al.'s (three other names); new-s: both S become one new name. Scoring and "
                              "held-out prompts share it.")  # fmt: skip
    if choice == FILE:
        typed = st.text_input("Path to a .jsonl file of {clean, corrupted, answer, distractor} pairs", key="circ_file").strip()
        task_spec = str(state.user_path(typed, "task file")) if typed else ""
    settings = circuit_settings(task_spec, corruption, method, n_prompts, steps, exact_top, graph, draws)
    report, pairs, key, saved = one_circuit(model, spec, settings, False)
    if report is not None and saved is None:
        return report, pairs, key, settings
    label = "Find the circuit again" if saved else "Find the circuit"
    if task_spec and st.button(label, type="primary", key="circ_run"):
        report, pairs, key, _ = one_circuit(model, spec, settings, True, choice == FILE)
        return report, pairs, key, settings
    if saved is not None:
        state.opened_note(saved)
        return report, pairs, None, settings
    st.info("Pick a task and a method, then press **Find the circuit** (on CPU, SmolLM2 takes minutes).")
    return None, [], None, settings


def both_counterfactuals(model, spec: str, settings: dict) -> None:
    """IOI under MIB's S2 -> IO and Wang et al.'s ABC on the same held-out prompts, side by side: each
    kept from this session, opened from a save with the same settings, or found on the button."""
    st.subheader("IOI under both counterfactuals")
    st.caption(SWITCH_NOTE)
    both = {c: {**settings, "corruption": c} for c in BOTH}
    got = {c: one_circuit(model, spec, s, False) for c, s in both.items()}
    missing = [c for c, r in got.items() if r[0] is None]
    if missing and st.button(f"Find the circuit under {' and '.join(missing)}", key="circ_both_run",
                             help="the same task, method, prompts and graph, once per counterfactual; each is saved"):
        for c in missing:
            got[c] = one_circuit(model, spec, both[c], True)
        missing = []
    if missing:
        have = [c for c in BOTH if c not in missing]
        st.info(f"Found so far under {', '.join(have) or 'neither'}: press the button for {' and '.join(missing)} "
                "(with the same settings as above).")  # fmt: skip
        return
    rows, heldout = [], []
    for c in BOTH:
        report, pairs = got[c][0], got[c][1]
        heldout.append([a for a, _ in pairs])
        rows.append(counterfactual_row(c, report))
    st.dataframe(rows, hide_index=True, key="circ_both_table",
                 column_config={k: st.column_config.NumberColumn(format="%.3f") for k in
                                ("f at 5%", "m(full)", "m(∅)", "m(C at 5%)")})  # fmt: skip
    n = min(map(len, heldout))
    same = ("the same held-out clean prompts" + ("" if n == len(heldout[0]) == len(heldout[1]) else f" (the first {n}"
            " compared: a save keeps only those)") if n and heldout[0][:n] == heldout[1][:n] else
            "held-out prompts that could not be compared (a save from the CLI keeps none)")  # fmt: skip
    st.caption(f"Both on {same}, each against its own counterfactual; m in logits (logit(IO) - logit(S) at the "
               "last position), f = (m(C) - m(∅)) / (m(full) - m(∅)) at 5% of the edges by |score|.")  # fmt: skip


def counterfactual_row(corruption: str, report) -> dict:
    """One counterfactual's line of the side-by-side table: f at 5% with its interval, m(full), m(∅), m(C)."""
    c = report.curve
    f, lo, hi = c.at(HEADLINE)
    row = {"counterfactual": corruption + (" (MIB's)" if corruption == "s2-io" else " (Wang et al.'s)"),
           "graph": f"{report.graph_name} ({report.scores.graph.n_edges:,} edges)", "f at 5%": f,
           "95% interval": f"[{lo:.3f}, {hi:.3f}]", "m(full)": c.m_full, "m(∅)": c.m_empty,
           "m(C at 5%)": c.m_circuit[c.percents.index(HEADLINE)], "held-out prompts": c.n_heldout}  # fmt: skip
    if report.pooled is not None:
        pf, plo, phi = report.pooled.at(c.percents.index(HEADLINE))
        row["pooled over scoring draws"] = f"{pf:.3f} [{plo:.3f}, {phi:.3f}] ({report.pooled.n_draws} draws)"
    if report.random is not None:
        rf = report.random.at(HEADLINE)
        row["random at 5%"] = f"{rf.value:.3f} ({rf.lo:.3f} to {rf.hi:.3f})"
    row["verdict at 5%"] = circuit_verdict(report, HEADLINE).line()
    return row


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
        state.keep_options(key, options)
    pin = c2.multiselect("Pin nodes", options, key="circ_pin",
                         help="keep only the edges into and out of these nodes")  # fmt: skip
    hide = c3.multiselect("Hide nodes", options, key="circ_hide", help="leave these nodes and their edges out")
    _clicked_node(options)
    node = st.selectbox("Node", options, index=None, key="circ_node", placeholder="click a node in the graph, or pick one",
                        help="its incoming and outgoing edges in the circuit, with their scores, below the graph")  # fmt: skip
    fig = edge_graph(g, s.scores, keep, f"Circuit at {percent:g}% of edges ({s.method}, {s.task}; {graph_words(report)})", MAX_PAIRS,
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


def graph_words(report) -> str:
    """Which graph the circuit is on, with its edge count, for every figure's title."""
    return f"{report.graph_name} graph, {report.scores.graph.n_edges:,} edges"


def draw(report, pairs: list) -> None:
    """The circuit: tiles, verdict, the prompts, the graph at the chosen size, the curve beside random
    circuits, the exact check."""
    g, s, c = report.scores.graph, report.scores, report.curve
    m = st.columns(4)
    percent = st.select_slider("Circuit size (% of edges)", options=list(MIB_PERCENTS), value=HEADLINE, key="circ_size")
    m[0].metric(f"Edges in the graph ({report.graph_name})", f"{g.n_edges:,}",
                help=f"{GRAPH_HELP.get(report.graph_name, report.graph_name)}: {g.n_nodes:,} nodes, {g.n_edges:,} edges")
    f, lo, hi = c.at(percent)  # the tile follows the slider
    pool = report.pooled
    pooled_words = ""
    if pool is not None:
        pf, plo, phi = pool.at(c.percents.index(percent))
        pooled_words = (f"; over {pool.n_draws} scoring draws and the held-out prompts together: {pf:.2f}, "
                        f"{plo:.2f} to {phi:.2f}")  # fmt: skip
    m[1].metric(f"f at {percent:g}% of edges", f"{f:.2f}",
                help=f"faithfulness of the circuit drawn below (edges ranked by |score|) on the held-out prompts; "
                     f"95% bootstrap interval {lo:.2f} to {hi:.2f}{pooled_words}")  # fmt: skip
    m[2].metric("CPR (signed ranking)", f"{report.cpr:.2f}",
                help="MIB's circuit performance ratio: the area under f over every circuit size, edges ranked by "
                     "their signed score (higher is better)")  # fmt: skip
    m[3].metric("CMD (|score| ranking)", f"{report.cmd:.2f}",
                help="MIB's circuit-model distance: the area under |1 - f| over every circuit size, edges ranked by "
                     "|score|, the ranking the circuit and the tile use (lower is better); CPR ranks differently")  # fmt: skip
    below = ([pool] if pool is not None else []) + ([report.random] if report.random is not None else [])
    if below:
        r = st.columns(4)
        i = 0
        if pool is not None:
            r[0].metric(f"f at {percent:g}%, {pool.n_draws} scoring draws", f"{pf:.2f} [{plo:.2f}, {phi:.2f}]",
                        help="the scoring prompts resampled too (each draw scored again), pooled with the held-out "
                             "prompts' bootstrap: the interval carries both samples' variance (interp.circuits.draws)")  # fmt: skip
            i = 1
        if report.random is not None:
            rnd = report.random
            rf, rcpr, rcmd = rnd.at(percent), rnd.area("cpr"), rnd.area("cmd")
            spread = f"mean over {rnd.draws} random circuits of the same sizes and pruning (MIB's Random row); min to max"
            r[i].metric(f"Random: f at {percent:g}%", f"{rf.value:.2f}", help=f"{spread} {rf.lo:.2f} to {rf.hi:.2f}")
            r[i + 1].metric("Random: CPR", f"{rcpr.value:.2f}", help=f"{spread} {rcpr.lo:.2f} to {rcpr.hi:.2f}")
            r[i + 2].metric("Random: CMD", f"{rcmd.value:.2f}", help=f"{spread} {rcmd.lo:.2f} to {rcmd.hi:.2f}")
    verdict = circuit_verdict(report, percent)  # the rule `interp circuit` prints and edges.json records
    (st.success if verdict.passed else st.warning)(f"**{verdict.word.capitalize()}** at {percent:g}% of edges: "
                                                   f"{verdict.why}.", icon="✅" if verdict.passed else "⚠️")  # fmt: skip
    st.caption(f"On the {c.n_heldout} held-out prompts, {graph_words(report)}: m(full) {c.m_full:.3f}, m(∅) "
               f"{c.m_empty:.3f} (f = 0 is the empty circuit, 1 the full model). Verdict's rule: {verdict.rule}."
               + ("" if report.random is not None else " No random row: this file was written before it was measured."))  # fmt: skip
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
                                        f"Faithfulness on {c.n_heldout} held-out prompts ({graph_words(report)})",
                                        highlight=percent, random=report.random), key="circ_curve")  # fmt: skip
    if report.exact:
        ex = report.exact
        st.plotly_chart(exact_check_figure([r["estimate"] for r in ex], [r["exact"] for r in ex],
                                           [f"{r['src']}->{r['dst']}" for r in ex],
                                           f"{s.method} estimate vs exact patching ({graph_words(report)})",
                                           groups=[r.get("group") for r in ex]),
                        key="circ_exact_fig")  # fmt: skip
        st.dataframe(ex, hide_index=True, key="circ_exact_table")


st.title("Circuit")
spec = state.current_spec()
settings = None  # the find panel's settings, for IOI's side-by-side below
with state.shows_errors():
    model = state.get_model(spec)
    st.caption("Scores every edge (writer → input of a later head's q/k/v, an MLP or the logits) on the task's "
               "scoring prompts, then ablates every edge outside the top-n (the corrupted prompt's activation flows "
               "there instead) on held-out prompts: faithfulness f = (m(C) − m(∅)) / (m(M) − m(∅)), as in MIB.")
    mode = st.radio("Circuit", [FIND, OPEN], key="circ_mode", horizontal=True)
    if mode == FIND:
        report, pairs, key, settings = find_panel(model, spec)
    else:
        (report, pairs), key = open_panel(model), None
    if report is not None:
        if key is not None:
            state.saved_note(key)
        draw(report, pairs)
if settings is not None and settings["task"] == "ioi":
    with state.shows_errors():
        both_counterfactuals(model, spec, settings)
