"""An attribution graph as one offline HTML page (graph.html): the figure of interp.viz.attribution with
plotly.js inlined (no CDN, no network: the file works alone, wherever it is copied), the graph's data
embedded as JSON (<script type="application/json" id="graph-data">), and a small script that makes it
explorable: click a node (or pick it) for its incoming and outgoing edges with their weights and what
is known about it (activation, influence, promoted tokens, a supernode's members), pin nodes (only
their edges stay), hide nodes, all redrawn in the page. A legend names the node kinds and the lines.

The script redraws with the figure's own rules (interp.viz.graph: width classes BINS of the strongest
|weight|, colour by sign, the selected node's edges over faded others); text from the prompt reaches
the page only as escaped JSON and through textContent, never as markup.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from interp.graphs.view import GraphView
from interp.io import write_text
from interp.viz.attribution import KINDS, attribution_figure, strongest, summary
from interp.viz.graph import BINS, LABEL_NODES, NEGATIVE, POSITIVE, line_style

DATA_ID = "graph-data"


def payload(view: GraphView, max_edges: int | None = None) -> dict:
    """What the page embeds: the view's nodes (placed) and edges, its supernodes, scores and
    thresholds, and the drawing rules the script follows."""
    return {
        "prompt": view.prompt, "str_tokens": view.str_tokens, "n_layers": view.n_layers,
        "nodes": [{"id": n.id, "kind": n.kind, "x": n.x, "y": n.y, "label": n.label, "hover": n.hover, "info": n.info}
                  for n in view.nodes],
        "edges": [{"source": e.source, "target": e.target, "weight": e.weight, "parts": e.parts} for e in view.edges],
        "supernodes": view.supernodes, "scores": view.scores, "thresholds": view.thresholds,
        "style": {"positive": POSITIVE, "negative": NEGATIVE, "bins": list(BINS), "top": strongest(view),
                  "widths": [line_style(True, k)["width"] for k in range(len(BINS))], "label_nodes": LABEL_NODES,
                  "max_edges": max_edges, "kinds": {k: {"name": name, "marker": m} for k, (name, m) in KINDS.items()}},
    }  # fmt: skip


def embedded(data: dict) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' left to end it or open a comment."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def read_embedded(page: str) -> dict:
    """The graph data a page embeds (the inverse of `embedded`, for tests and tools)."""
    opening = f'<script type="application/json" id="{DATA_ID}">'
    start = page.index(opening) + len(opening)
    return json.loads(page[start : page.index("</script>", start)])


STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; }
header { padding: 8px 16px; border-bottom: 1px solid #ddd; }
header h1 { font-size: 18px; margin: 4px 0; }
header p { margin: 2px 0; font-size: 13px; }
#main { display: flex; align-items: flex-start; }
#plot { flex: 1 1 auto; min-width: 0; order: 1; }
aside { order: 2;  flex: 0 0 360px; padding: 8px 12px; border-left: 1px solid #ddd; font-size: 13px; max-height: 100vh;
        overflow-y: auto; }
aside h2 { font-size: 15px; margin: 10px 0 4px; }
aside pre { white-space: pre-wrap; font-size: 12px; background: #f6f6f6; padding: 6px; }
table { border-collapse: collapse; width: 100%; }
td, th { padding: 2px 4px; border-bottom: 1px solid #eee; text-align: left; }
td.w { text-align: right; font-variant-numeric: tabular-nums; }
td.pos { color: #1f77b4; } td.neg { color: #d62728; }
a.node { cursor: pointer; color: #333; text-decoration: underline dotted; }
button { margin: 2px 4px 2px 0; }
.legend span { display: inline-block; margin-right: 10px; }
"""

SCRIPT = r"""
function graphExplorer(gd) {
  if (document.readyState === "loading") {  // the figure can draw before the panel below it is parsed
    document.addEventListener("DOMContentLoaded", () => graphExplorer(gd));
    return;
  }
  const data = JSON.parse(document.getElementById("graph-data").textContent);
  const S = data.style;
  const byId = new Map(data.nodes.map(n => [n.id, n]));
  const pinned = new Set(), hidden = new Set();
  let selected = null;
  const legend = gd.data.filter(t => t.meta === "legend");
  const $ = id => document.getElementById(id);
  const esc = s => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const fmt = w => (w >= 0 ? "+" : "") + Number(w.toPrecision(4));
  const how = p => p > 1 ? "sum of " + p + " edges" : "direct";
  function level(w) {
    for (let k = 0; k < S.bins.length; k++) if (Math.abs(w) >= S.bins[k] * S.top) return k;
    return S.bins.length - 1;
  }
  function shown() {
    let edges = data.edges.filter(e => !hidden.has(e.source) && !hidden.has(e.target));
    let nodes;
    if (pinned.size) {
      edges = edges.filter(e => pinned.has(e.source) || pinned.has(e.target));
      const ids = new Set([...pinned].filter(id => !hidden.has(id)));
      edges.forEach(e => { ids.add(e.source); ids.add(e.target); });
      nodes = data.nodes.filter(n => ids.has(n.id));
    } else {
      nodes = data.nodes.filter(n => !hidden.has(n.id));
    }
    return [nodes, S.max_edges === null ? edges : edges.slice(0, S.max_edges)];
  }
  function traces() {
    const [nodes, edges] = shown();
    const groups = new Map(), mx = [], my = [], mt = [];
    for (const e of edges) {
      const a = byId.get(e.source), b = byId.get(e.target), lv = level(e.weight);
      const focus = selected !== null && (e.source === selected || e.target === selected);
      const key = (focus ? 1 : 0) + "," + (e.weight >= 0 ? 1 : 0) + "," + lv;
      if (!groups.has(key)) groups.set(key, {key, focus, positive: e.weight >= 0, lv, x: [], y: []});
      const g = groups.get(key), xm = (a.x + b.x) / 2, ym = (a.y + b.y) / 2;
      g.x.push(a.x, xm, b.x, null); g.y.push(a.y, ym, b.y, null);
      mx.push(xm); my.push(ym);
      mt.push(esc(e.source + " \u2192 " + e.target + ": " + fmt(e.weight) + (e.parts > 1 ? " (" + how(e.parts) + ")" : "")));
    }
    const out = [...groups.values()].sort((p, q) => p.key < q.key ? -1 : 1).map(g => ({
      type: "scatter", mode: "lines", x: g.x, y: g.y, hoverinfo: "skip", showlegend: false, meta: "edges",
      legendgroup: String(g.positive ? "True" : "False") + g.lv,
      opacity: selected !== null ? (g.focus ? 0.95 : 0.12) : 0.9 - 0.15 * g.lv,
      line: {color: g.positive ? S.positive : S.negative, width: S.widths[g.lv]}}));
    out.push(...legend);
    out.push({type: "scatter", mode: "markers", x: mx, y: my, hovertext: mt, hoverinfo: "text", showlegend: false,
              name: "edges", meta: "edge-hover", marker: {size: 7, color: "#777777", opacity: 0}});
    const label = nodes.length <= S.label_nodes;
    for (const [kind, k] of Object.entries(S.kinds)) {
      const mine = nodes.filter(n => n.kind === kind);
      if (!mine.length) continue;
      out.push({type: "scatter", mode: "markers+text", name: k.name, meta: "nodes", marker: k.marker,
                x: mine.map(n => n.x), y: mine.map(n => n.y), customdata: mine.map(n => n.id),
                text: mine.map(n => label ? esc(n.label) : ""), textposition: "top center", textfont: {size: 9},
                hovertext: mine.map(n => esc(n.hover).replace(/\n/g, "<br>")), hovertemplate: "%{hovertext}<extra></extra>"});
    }
    if (selected !== null && nodes.some(n => n.id === selected)) {
      const n = byId.get(selected);
      out.push({type: "scatter", mode: "markers", x: [n.x], y: [n.y], name: "selected: " + selected, meta: "ring",
                hoverinfo: "skip", marker: {size: 22, symbol: "circle-open", color: "#ff7f0e", line: {width: 3}}});
    }
    return out;
  }
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function nodeLink(id) {
    const a = el("a", id, "node");
    a.title = byId.has(id) ? byId.get(id).hover : id;
    a.onclick = () => select(id);
    return a;
  }
  function edgeTable(rows, other) {
    const t = el("table"), head = el("tr");
    ["node", "weight", "how"].forEach(h => head.appendChild(el("th", h)));
    t.appendChild(head);
    for (const e of rows) {
      const tr = el("tr"), td = el("td");
      td.appendChild(nodeLink(e[other]));
      tr.appendChild(td);
      tr.appendChild(el("td", fmt(e.weight), "w " + (e.weight >= 0 ? "pos" : "neg")));
      tr.appendChild(el("td", how(e.parts)));
      t.appendChild(tr);
    }
    return t;
  }
  function details() {
    $("pinned").textContent = pinned.size ? [...pinned].join(", ") : "none";
    $("hidden").textContent = hidden.size ? [...hidden].join(", ") : "none";
    const box = $("node");
    box.replaceChildren();
    if (selected === null) {
      box.appendChild(el("p", "Click a node, or pick one above, for its incoming and outgoing edges."));
      return;
    }
    const n = byId.get(selected);
    box.appendChild(el("h2", selected));
    box.appendChild(el("pre", n.hover));
    const pin = el("button", pinned.has(selected) ? "unpin" : "pin");
    pin.id = "pin-node";
    pin.onclick = () => { pinned.has(selected) ? pinned.delete(selected) : pinned.add(selected); render(); };
    const hide = el("button", hidden.has(selected) ? "show" : "hide");
    hide.id = "hide-node";
    hide.onclick = () => { hidden.has(selected) ? hidden.delete(selected) : hidden.add(selected); render(); };
    box.append(pin, hide);
    const info = n.info || {};
    if (n.kind === "supernode") {
      box.appendChild(el("p", "Members (its edges are the sums of theirs; edges inside it sum to " + fmt(info.internal || 0) + "):"));
      (info.members || []).forEach(m => { box.appendChild(nodeLink(m)); box.appendChild(document.createTextNode(" ")); });
    }
    if (info.top_tokens && info.top_tokens.length) {
      box.appendChild(el("p", "Promotes (decoder row through the unembedding): " +
        info.top_tokens.map(t => JSON.stringify(t[0]) + " " + t[1].toFixed(3)).join(", ")));
    }
    const into = data.edges.filter(e => e.target === selected).sort((p, q) => Math.abs(q.weight) - Math.abs(p.weight));
    const from = data.edges.filter(e => e.source === selected).sort((p, q) => Math.abs(q.weight) - Math.abs(p.weight));
    const sum = rows => fmt(rows.reduce((s, e) => s + e.weight, 0));
    box.appendChild(el("h2", "Incoming: " + into.length + " edges (sum " + sum(into) + ")"));
    box.appendChild(edgeTable(into, "source"));
    box.appendChild(el("h2", "Outgoing: " + from.length + " edges (sum " + sum(from) + ")"));
    box.appendChild(edgeTable(from, "target"));
  }
  function render() {
    Plotly.react(gd, traces(), gd.layout);
    details();
  }
  function select(id) {
    selected = byId.has(id) ? id : null;
    $("pick").value = selected === null ? "" : selected;
    render();
  }
  const pick = $("pick");
  for (const n of data.nodes) {
    const o = el("option", n.id + (n.label && n.label !== n.id ? "  " + n.label : ""));
    o.value = n.id;
    pick.appendChild(o);
  }
  pick.onchange = () => select(pick.value);
  $("clear-pins").onclick = () => { pinned.clear(); render(); };
  $("show-hidden").onclick = () => { hidden.clear(); render(); };
  gd.on("plotly_click", ev => {
    const p = ev && ev.points && ev.points[0];
    if (p && typeof p.customdata === "string" && byId.has(p.customdata)) select(p.customdata);
  });
  Plotly.Plots.resize(gd);
  window.graphExplorer.state = {pinned, hidden, get selected() { return selected; }, select, render};
  details();
}
"""


def _legend() -> str:
    kinds = "".join(f'<span><b style="color:{m["color"]}">●</b> {html.escape(name)}</span>' for name, m in KINDS.values())
    return (f'<p class="legend">{kinds}</p><p>Lines: <b style="color:{POSITIVE}">blue</b> a positive direct effect, '
            f'<b style="color:{NEGATIVE}">red</b> a negative one; width = |weight| against the strongest edge. '
            "y = layer (token embeddings at the bottom, logits at the top), x = token position. A supernode's "
            "edges are the sums of its members' edges.</p>")  # fmt: skip


def graph_html(view: GraphView, title: str = "Attribution graph", max_edges: int | None = None) -> str:
    """The whole page (module docstring)."""
    fig = attribution_figure(view, title, max_edges)
    plot = fig.to_html(include_plotlyjs=True, full_html=False, div_id="graph",
                       post_script="graphExplorer(document.getElementById('{plot_id}'));",
                       config={"responsive": True})  # fmt: skip
    names = f"{len(view.supernodes)} supernodes: {', '.join(view.supernodes)}" if view.supernodes else "no supernodes"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<header><h1>{html.escape(title)}</h1>
<p>Prompt: <code>{html.escape(view.prompt)}</code></p>
<p>{html.escape(summary(view) or "no scores recorded")}; {len(view.nodes)} nodes, {len(view.edges)} edges; {html.escape(names)}</p>
</header>
<script type="application/json" id="{DATA_ID}">{embedded(payload(view, max_edges))}</script>
<script>{SCRIPT}</script>
<div id="main">
<aside>
<h2>Explore</h2>
<p><select id="pick"><option value="">pick a node…</option></select></p>
<p>Pinned: <span id="pinned">none</span> <button id="clear-pins">clear pins</button></p>
<p>Hidden: <span id="hidden">none</span> <button id="show-hidden">show all</button></p>
<div id="node"></div>
<h2>Legend</h2>{_legend()}
</aside><div id="plot">{plot}</div></div>
</body></html>
"""


def write_graph_html(view: GraphView, path: str | Path, title: str = "Attribution graph",
                     max_edges: int | None = None) -> Path:  # fmt: skip
    """graph.html, atomically."""
    return write_text(path, graph_html(view, title, max_edges))
