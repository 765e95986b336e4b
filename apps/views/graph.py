"""Graph view: an attribution graph over transcoder features (interp.graphs), opened from a saved
graph.json (the runs folder, ./out, or a typed path) or built for the sidebar's prompt on the sidebar's
model with a transcoder folder (a small model: the prompt is capped at MAX_TOKENS tokens; the graph is
saved to the runs folder). Drawn by layer (y) and position (x), with its replacement and completeness
scores; the pruning thresholds re-prune the whole graph when graph.json holds it; click a node (or pick
it) for its edges, pin and hide nodes, group nodes into supernodes (each drawn as one node whose edges
are the sums of its members' edges), and download the offline graph.html or the grouping."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from apps import state
from interp import WorkbenchError
from interp.graphs.supernodes import GROUPABLE, check_supernodes
from interp.graphs.view import graph_view, node_kinds
from interp.runs import TITLES, read_run
from interp.viz.attribution import attribution_figure, summary, visible
from interp.viz.graph import node_table

OPEN, BUILD = "open a saved graph", "build one for the prompt"
MAX_TOKENS = 48  # the longest prompt built here (the CLI has no such cap)
MAX_EDGES = 3000  # lines drawn at most (the strongest); the node table lists every edge


# -- the graph's data ---------------------------------------------------------------------------------


@st.cache_data(max_entries=8, show_spinner="Reading graph.json…")
def read_data(path: str, stamp: float) -> dict:
    """graph.json as written (checked to be an attribution graph)."""
    from interp.graphs.export import FORMAT

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"{path!r} is unreadable ({type(e).__name__}); write it again with `interp graph`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("nodes"), list):
        raise WorkbenchError(f"{path!r} is not an attribution graph ({FORMAT}); write one with `interp graph`")
    return data


@st.cache_data(max_entries=16, show_spinner="Pruning…")
def repruned(path: str, stamp: float, node_threshold: float, edge_threshold: float) -> dict:
    """The whole graph in graph.json pruned again at these thresholds (its nodes' extra fields kept)."""
    from interp.graphs import export, prune

    data = read_data(path, stamp)
    g = export.read_graph(path)
    extra = {n["index"]: {k: n[k] for k in ("top_tokens", "label") if k in n} for n in data["nodes"]}
    out = export.graph_dict(g, prune.prune(g, node_threshold, edge_threshold), with_adjacency=False, extra=extra)
    out["scores"] = data.get("scores")  # they do not depend on the thresholds
    out["graph"] = {"features": data["graph"]["features"]}  # every feature's id, so a supernode may name pruned ones
    return out


def build_graph(model, folder: str, prompt: str, max_logits: int, progress):
    """(graph, pruned, scores, extra) of `prompt` with the transcoders in `folder`, as `interp graph` makes them."""
    from interp.features import load as load_dictionary
    from interp.graphs import export, prune
    from interp.graphs.attribute import attribute

    tokens = model.to_tokens(prompt)[0]
    if tokens.numel() > MAX_TOKENS:
        raise WorkbenchError(f"the prompt is {tokens.numel()} tokens; graphs are built here for at most {MAX_TOKENS} "
                             "(use `interp graph` for longer ones)")  # fmt: skip
    progress(0, 1, "loading the transcoders")
    tc = load_dictionary(folder, model, device=model.device)
    g = attribute(model, tc, prompt, max_logits, progress=progress)
    pruned = prune.prune(g)
    return g, pruned, prune.scores(g), export.feature_tokens(model, tc, g, pruned.nodes.nonzero()[:, 0].tolist())


def write_files(folder: Path, data: dict) -> None:
    """graph.json and graph.html, as `interp graph` writes them."""
    from interp.io import write_json
    from interp.viz.graph_html import write_graph_html

    write_json(folder / "graph.json", data)
    write_graph_html(graph_view(data), folder / "graph.html", f"Attribution graph of {data['prompt']!r}")


def build_panel(spec: str) -> str | None:
    """The transcoder folder and the build button; returns the path of the graph.json built (or saved
    earlier for the same model, prompt and settings)."""
    from interp.graphs import export

    prompt = state.current_prompt()
    c1, c2 = st.columns([3, 1])
    typed = c1.text_input("Transcoder folder (every layer; ours, SAELens or sparsify)", key="graph_tc",
                          placeholder="e.g. runs/tc, as `interp features train --site mlp` writes it").strip()  # fmt: skip
    max_logits = int(c2.number_input("Logit nodes", 1, 20, 5, key="graph_logits", help="the most likely next tokens"))
    if not typed:
        st.info("Give a transcoder folder, then press **Build the graph** (a small model: the prompt is capped at "
                f"{MAX_TOKENS} tokens).")  # fmt: skip
        return None
    folder = str(state.user_path(typed, "transcoder folder"))
    settings = {"prompt": prompt, "transcoders": folder, "max_logits": max_logits}
    key = ("graph", spec, prompt, folder, max_logits)
    saved = state.saved_match("graph", spec, settings)
    label = "Build the graph again" if saved is not None else "Build the graph"
    if st.button(label, type="primary", key="graph_run"):
        model = state.get_model(spec)
        g, pruned, scores, extra = state.remember(
            key, "Building the attribution graph", lambda progress: build_graph(model, folder, prompt, max_logits, progress))
        state.save_result(key, "graph", spec, settings, lambda tmp: write_files(tmp, export.graph_dict(g, pruned, scores, extra=extra)))
        saved = state.saved_match("graph", spec, settings)
    if saved is None:
        return None
    state.opened_note(saved)
    return str(saved.file)


def open_panel() -> str | None:
    """A saved graph (the runs folder, ./out) or a typed path to graph.json (or its folder)."""
    runs = state.saved_runs("graph", Path("out"))
    picked = state.pick_saved(runs, "graph_saved", "Saved attribution graph")
    typed = st.text_input("…or a path to graph.json (or its folder)", key="graph_path",
                          help="e.g. the folder `interp graph --out` wrote").strip()  # fmt: skip
    if not (typed or picked):
        st.info(f"No saved attribution graph under {state.public(str(state.runs_root()))}/ or out/ yet: build one "
                "here or run `interp graph --out runs/NAME`; or type a path.")  # fmt: skip
        return None
    run = read_run(state.user_path(typed, "graph file")) if typed else picked
    if run.kind != "graph":
        raise WorkbenchError(f"{str(run.folder)!r} holds a saved {TITLES[run.kind]}, not an attribution graph (graph.json)")
    state.opened_note(run)
    return str(run.file)


# -- supernodes, pins and the drawing ---------------------------------------------------------------


def supernode_panel(data: dict, path: str) -> dict[str, list[str]]:
    """The grouping: graph.json's own, then the ones made here (name + members, Add; remove); checked."""
    groups = st.session_state.setdefault("graph_groups", {}).setdefault(path, dict(data.get("supernodes") or {}))
    kinds = node_kinds(data)
    with st.expander(f"Supernodes ({len(groups)})", expanded=bool(groups)):
        st.caption("A supernode is drawn as one node; its edge to any other node is the SUM of its members' edges "
                   "(edges between its own members lie inside it).")  # fmt: skip
        taken = {m for ms in groups.values() for m in ms}
        free = [n["id"] for n in data["nodes"] if n["kind"] in GROUPABLE and n["id"] not in taken]
        c1, c2, c3 = st.columns([1, 3, 1])
        name = c1.text_input("Name", key="graph_group_name").strip()
        members = c2.multiselect("Members (features, error nodes)", free, key="graph_group_members")
        if c3.button("Add supernode", key="graph_group_add", disabled=not (name and members)):
            check_supernodes({**groups, name: members}, kinds)  # one line on a clash
            if name in groups:
                raise WorkbenchError(f"there is a supernode {name!r} already; pick another name")
            groups[name] = list(members)
        if groups:
            drop = st.multiselect("Remove supernodes", list(groups), key="graph_group_drop")
            if drop and st.button("Remove", key="graph_group_remove"):
                for d in drop:
                    groups.pop(d, None)
            st.dataframe([{"supernode": k, "members": ", ".join(v)} for k, v in groups.items()], hide_index=True,
                          key="graph_groups_table")  # fmt: skip
            st.download_button("supernodes.json", json.dumps(groups, indent=1), "supernodes.json", "application/json",
                               key="graph_groups_download", help="for `interp graph --supernodes supernodes.json`")  # fmt: skip
    return check_supernodes(groups, kinds)


def _clicked_node(options: list[str]) -> None:
    """A click on a node (the chart's selection, from the last run) picks it in the node box, once."""
    event = st.session_state.get("graph_fig")
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    names = [p.get("customdata") for p in points if isinstance(p.get("customdata"), str)]
    if names and names[0] in options and st.session_state.get("_graph_last_click") != names[0]:
        st.session_state["graph_node"] = names[0]
    st.session_state["_graph_last_click"] = names[0] if names else None


def draw(path: str) -> None:
    from interp.viz.graph_html import graph_html

    stamp = Path(path).stat().st_mtime
    data = read_data(path, stamp)
    thresholds = data.get("thresholds") or {}
    if "graph" in data and thresholds:
        c1, c2 = st.columns(2)
        node_t = c1.slider("Node threshold", 0.1, 1.0, float(thresholds["node"]), 0.01, key=f"graph_node_t:{path}",
                           help="keep the most influential nodes holding this share of the influence on the logits")  # fmt: skip
        edge_t = c2.slider("Edge threshold", 0.1, 1.0, float(thresholds["edge"]), 0.01, key=f"graph_edge_t:{path}",
                           help="keep the strongest edges holding this share of the edge influence")  # fmt: skip
        if (node_t, edge_t) != (thresholds["node"], thresholds["edge"]):
            data = repruned(path, stamp, node_t, edge_t)
    groups = supernode_panel(data, path)
    view = graph_view(data, groups)
    m = st.columns(4)
    if view.scores:
        m[0].metric("Replacement score", f"{view.scores['replacement']:.3f}",
                    help="of the influence reaching the logits from tokens and error nodes, the tokens' share")  # fmt: skip
        m[1].metric("Completeness", f"{view.scores['completeness']:.3f}",
                    help="the share of the nodes' inputs not from error nodes, weighted by influence")  # fmt: skip
    m[2].metric("Nodes drawn", f"{len(view.nodes):,}", help=f"of {data.get('n_nodes', len(view.nodes)):,} in the whole graph")
    m[3].metric("Edges drawn", f"{len(view.edges):,}")
    st.caption(f"Prompt {view.prompt!r} on {data.get('model', {}).get('name', '?')}; {summary(view)}. y = layer "
               "(token embeddings at the bottom, logits at the top), x = token position; grey crosses are error "
               "nodes (what a transcoder misses), purple diamonds supernodes.")  # fmt: skip
    options = [n.id for n in view.nodes]
    for key in ("graph_pin", "graph_hide", "graph_node"):
        state.keep_options(key, options)
    c1, c2 = st.columns(2)
    pin = c1.multiselect("Pin nodes", options, key="graph_pin", help="keep only the edges into and out of these nodes")
    hide = c2.multiselect("Hide nodes", options, key="graph_hide", help="leave these nodes and their edges out")
    _clicked_node(options)
    node = st.selectbox("Node", options, index=None, key="graph_node", placeholder="click a node in the graph, or pick one",
                        help="its incoming and outgoing edges with their weights, below the graph")  # fmt: skip
    fig = attribution_figure(view, f"Attribution graph ({data.get('model', {}).get('name', '')})", MAX_EDGES,
                             pin=pin, hide=hide, selected=node)  # fmt: skip
    st.plotly_chart(fig, key="graph_fig", on_select="rerun", selection_mode="points")
    if node is not None:
        n = view.node(node)
        rows = node_table(visible(view)[1], node)
        into = sum(r["score"] for r in rows if r["direction"] == "in")
        out = sum(r["score"] for r in rows if r["direction"] == "out")
        st.markdown(f"**{node}**: {sum(r['direction'] == 'in' for r in rows)} edges in (weights sum to {into:+.4g}), "
                    f"{sum(r['direction'] == 'out' for r in rows)} out (sum {out:+.4g})")  # fmt: skip
        st.code(n.hover, language=None)
        table = [{"direction": r["direction"], "from": r["from"], "to": r["to"], "weight": r["score"], "how": r["input"]}
                 for r in rows]  # fmt: skip
        st.dataframe(table, hide_index=True, key="graph_node_edges",
                     column_config={"weight": st.column_config.NumberColumn(format="%+.4g")})  # fmt: skip
        if n.kind == "feature":
            st.page_link("views/features.py", label=f"Feature {n.info['layer']}:{n.info['feature']} in the Features view",
                         icon=":material/scatter_plot:")  # fmt: skip
    st.download_button("graph.html (offline, explorable)", lambda: graph_html(view, f"Attribution graph of {view.prompt!r}"),
                       "graph.html", "text/html", key="graph_html_download",
                       help="this graph with its supernodes as one self-contained page (plotly inlined)")  # fmt: skip


st.title("Attribution graph")
spec = state.current_spec()
with state.shows_errors():
    st.caption("Transcoder features replace the MLPs, attention and norms frozen from the real run (interp.graphs): "
               "nodes are the prompt's tokens, active features, error nodes and the top logits; an edge is a direct "
               "effect through the frozen model, pruned by influence on the logits (circuit-tracer's rules).")  # fmt: skip
    mode = st.radio("Graph", [OPEN, BUILD], key="graph_mode", horizontal=True)
    path = open_panel() if mode == OPEN else build_panel(spec)
    if path is not None:
        draw(path)
