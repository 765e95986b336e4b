"""Attention, logit-lens and prediction figures: one head's pattern with token hover (linear or log
colour scale), all heads of a layer as clickable, labelled thumbnails, the prompt as coloured
text (`token_view_html`, a self-contained CircuitsVis-style document), and the logit lens as a
layer x position grid of predicted tokens.

Axes are numeric positions labelled with the tokens (repeated tokens would otherwise collapse
into one categorical tick); hover shows the destination token, the source token and the weight.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

ATTN_SCALE = "Blues"
LENS_SCALE = "Viridis"


def token_labels(str_tokens: list[str]) -> list[str]:
    """Tokens made visible: whitespace shown as symbols, empty tokens named."""
    out = []
    for tok in str_tokens:
        shown = tok.replace(" ", "·").replace("\n", "↵").replace("\t", "⇥")
        out.append(shown if shown else "∅")
    return out


def _hover_grid(str_tokens: list[str], n_dest: int, n_src: int, weights: np.ndarray | None = None) -> np.ndarray:
    """customdata[dest, src] = (dest label, src label[, weight as text]) for the hover text (the
    weight is given where z is not the weight itself: the log scale)."""
    labels = token_labels(str_tokens)
    grid = np.empty((n_dest, n_src, 2 if weights is None else 3), dtype=object)
    for d in range(n_dest):
        for s in range(n_src):
            grid[d, s, 0] = f"{d}: {labels[d]}"
            grid[d, s, 1] = f"{s}: {labels[s]}"
            if weights is not None:
                grid[d, s, 2] = f"{weights[d, s]:.4g}"
    return grid


def _as_array(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=float)


LOG_FLOOR = 1e-4  # on the log scale, weights below this (and zeros: the causal mask) take the lowest colour


def log_weights(pattern: np.ndarray, floor: float = LOG_FLOOR) -> np.ndarray:
    """log10 of the weights, clipped below at `floor` (a weight of 0 has no logarithm)."""
    return np.log10(np.clip(np.asarray(pattern, dtype=float), floor, None))


def colour_bar(value_label: str = "weight", log_scale: bool = False, floor: float = LOG_FLOOR) -> dict:
    """The colour bar's title and ticks: on the log scale the ticks are the weights (0.001, 0.01...),
    placed at their logarithms, and the title says so."""
    if not log_scale:
        return {"title": {"text": value_label}}
    lo = math.floor(math.log10(floor))
    ticks = list(range(lo, 1))
    return {"title": {"text": f"{value_label}<br>(log scale)"}, "tickvals": ticks, "ticktext": [f"{10.0**t:g}" for t in ticks]}


def _heatmap(
    pattern: np.ndarray, custom: np.ndarray, showscale: bool = True, log_scale: bool = False,
    value_label: str = "weight", floor: float = LOG_FLOOR,
) -> go.Heatmap:
    """The pattern as a heatmap, on a linear (0..1) or log10 (floor..1) colour scale."""
    shown = "%{customdata[2]}" if log_scale else "%{z:.3f}"
    return go.Heatmap(
        z=log_weights(pattern, floor) if log_scale else pattern,
        customdata=custom,
        colorscale=ATTN_SCALE,
        zmin=math.log10(floor) if log_scale else 0.0,
        zmax=0.0 if log_scale else 1.0,
        showscale=showscale,
        colorbar=colour_bar(value_label, log_scale, floor),
        hovertemplate=f"destination %{{customdata[0]}}<br>source %{{customdata[1]}}<br>{value_label} {shown}<extra></extra>",
    )


def attention_figure(
    pattern: Float[Tensor, "dest src"], str_tokens: list[str], title: str = "", height: int | None = None, *,
    log_scale: bool = False, value_label: str = "weight", log_floor: float = LOG_FLOOR,
) -> go.Figure:
    """One head's attention pattern: rows are destination (query) tokens, columns source (key)
    tokens (labelled along the top). `log_scale` colours by log10 of the weight (from `log_floor`
    up to 1), so a head that parks most of its attention on one token shows where the rest goes;
    the colour bar says which scale is shown and `value_label` what the values are."""
    z = _as_array(pattern)
    n_dest, n_src = z.shape
    labels = token_labels(str_tokens)
    custom = _hover_grid(str_tokens, n_dest, n_src, z if log_scale else None)
    fig = go.Figure(_heatmap(z, custom, log_scale=log_scale, value_label=value_label, floor=log_floor))
    side = height or min(900, max(340, 24 * n_dest + 190))
    fig.update_layout(
        title=dict(text=title, y=0.99, yanchor="top"),
        height=side,
        margin=dict(l=10, r=10, t=110 if title else 80, b=10),  # room for the source tokens on top
        xaxis=dict(tickvals=list(range(n_src)), ticktext=labels[:n_src], side="top"),
        yaxis=dict(title="destination token", tickvals=list(range(n_dest)), ticktext=labels[:n_dest], autorange="reversed"),
    )
    return fig


def _summary(z: np.ndarray) -> str:
    """A head at a glance, for its thumbnail's hover: where its rows put their weight on average."""
    parts = [f"mean weight on the first token: {z[:, 0].mean():.2f}"]
    if z.shape[0] > 1:
        parts.append(f"on the previous token: {np.diagonal(z, offset=-1).mean():.2f}")
        parts.append(f"on itself: {np.diagonal(z).mean():.2f}")
    return "<br>".join(parts)


def head_grid_figure(
    patterns: Float[Tensor, "head dest src"], str_tokens: list[str], layer: int, cols: int = 6, *,
    selected: int | None = None, log_scale: bool = False, value_label: str = "weight", log_floor: float = LOG_FLOOR,
) -> go.Figure:
    """Small multiples: every head of one layer, labelled LxHy, on one colour scale. The first
    n_heads traces are the heatmaps; then one click target per head (an invisible marker at its
    thumbnail's centre, customdata (layer, head)): hovering anywhere on a thumbnail finds it
    (hoverdistance -1), so clicking a thumbnail selects its head (`head_from_selection`). The
    `selected` head's thumbnail is framed and its label bold."""
    z = _as_array(patterns)
    n_heads, n_dest, n_src = z.shape
    cols = max(1, min(cols, n_heads))
    rows = math.ceil(n_heads / cols)
    names = [f"L{layer}H{h}" for h in range(n_heads)]
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=[f"<b>{n} ▲</b>" if h == selected else n for h, n in enumerate(names)],
        horizontal_spacing=0.02, vertical_spacing=min(0.12, 0.3 / rows) if rows > 1 else 0.0,
    )
    for h in range(n_heads):
        custom = _hover_grid(str_tokens, n_dest, n_src, z[h] if log_scale else None)
        trace = _heatmap(z[h], custom, showscale=h == 0, log_scale=log_scale, value_label=value_label, floor=log_floor)
        trace.hovertemplate = f"{names[h]}<br>" + trace.hovertemplate
        fig.add_trace(trace, row=h // cols + 1, col=h % cols + 1)
    for h in range(n_heads):
        fig.add_trace(
            go.Scatter(
                x=[(n_src - 1) / 2], y=[(n_dest - 1) / 2], mode="markers", name=names[h], showlegend=False,
                marker=dict(size=24, opacity=0.0), customdata=[[layer, h]],
                hovertemplate=f"<b>{names[h]}</b>: click to show it above<br>{_summary(z[h])}<extra></extra>",
            ),
            row=h // cols + 1, col=h % cols + 1,
        )
    if selected is not None and 0 <= selected < n_heads:
        fig.add_shape(type="rect", x0=0, x1=1, y0=0, y1=1, xref="x domain", yref="y domain",
                      line=dict(color="#e6550d", width=3), row=selected // cols + 1, col=selected % cols + 1)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed")
    fig.update_layout(height=200 * rows + 80, margin=dict(l=10, r=10, t=60, b=10), hoverdistance=-1)  # t: the modebar above the labels
    return fig


def head_from_selection(points) -> tuple[int, int] | None:
    """(layer, head) of the thumbnail clicked in `head_grid_figure`, from a plotly selection's
    points (Streamlit's `event.selection.points`), or None when no click target is among them."""
    for point in points or []:
        data = point.get("customdata") if isinstance(point, dict) else None
        if isinstance(data, (list, tuple)) and len(data) == 2 and all(isinstance(v, (int, float)) for v in data):
            return int(data[0]), int(data[1])
    return None


def logit_lens_figure(lens, title: str = "Logit lens: top next token after each layer") -> go.Figure:
    """Layers (rows, the embedding at the bottom, the last block on top) x positions (columns):
    each cell shows the top-1 next token there, coloured by its probability; hover adds the input
    token and the rank, at that layer, of the model's final prediction."""
    probs = _as_array(lens.top_probs[..., 0])  # [layer, pos]
    n_layers, n_pos = probs.shape
    top = [[token_labels([lens.top_tokens[layer][pos][0]])[0] for pos in range(n_pos)] for layer in range(n_layers)]
    inputs = token_labels(lens.str_tokens)
    ranks = _as_array(lens.final_rank).astype(int)
    custom = np.empty((n_layers, n_pos, 3), dtype=object)
    for layer in range(n_layers):
        for pos in range(n_pos):
            custom[layer, pos] = (lens.layer_names[layer], f"{pos}: {inputs[pos]}", int(ranks[layer, pos]))
    fig = go.Figure(
        go.Heatmap(
            z=probs,
            text=top,
            texttemplate="%{text}",
            textfont=dict(size=10),
            customdata=custom,
            colorscale=LENS_SCALE,
            zmin=0.0,
            zmax=1.0,
            colorbar=dict(title="p(top)"),
            hovertemplate=(
                "after %{customdata[0]}<br>input %{customdata[1]}<br>top next token %{text} (p=%{z:.3f})"
                "<br>rank of final prediction: %{customdata[2]}<extra></extra>"
            ),
        )
    )
    fig.update_layout(
        title=title,
        height=min(1400, 22 * n_layers + 160),
        margin=dict(l=10, r=10, t=60, b=10),
        xaxis=dict(title="input token", tickvals=list(range(n_pos)), ticktext=inputs, side="top"),
        yaxis=dict(title="layer", tickvals=list(range(n_layers)), ticktext=lens.layer_names),
    )
    return fig


def predictions_figure(tokens: list[str], probs: list[float], title: str = "Next-token predictions") -> go.Figure:
    """Horizontal bars: the top next tokens and their probabilities, most likely on top."""
    labels = token_labels(tokens)
    fig = go.Figure(
        go.Bar(
            x=probs, y=[f"{i + 1}. {t}" for i, t in enumerate(labels)], orientation="h",
            text=[f"{p:.3f}" for p in probs], textposition="auto",
            hovertemplate="%{y}<br>p=%{x:.4f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title, height=26 * len(tokens) + 90, margin=dict(l=10, r=10, t=40, b=10),
        yaxis=dict(autorange="reversed"), xaxis=dict(title="probability", range=[0, max(probs + [1e-6]) * 1.1]),
    )
    return fig


def attention_rows_figure(
    weights: Float[Tensor, "row src"], str_tokens: list[str], row_labels: list[str], title: str = ""
) -> go.Figure:
    """Several heads' attention from one destination (e.g. the last token) over the source tokens:
    one row per head, hover with the head, the source token and the weight."""
    z = _as_array(weights)
    labels = token_labels(str_tokens)
    custom = np.empty(z.shape + (2,), dtype=object)
    for r in range(z.shape[0]):
        for s in range(z.shape[1]):
            custom[r, s] = (row_labels[r], f"{s}: {labels[s]}")
    fig = go.Figure(
        go.Heatmap(
            z=z, customdata=custom, colorscale=ATTN_SCALE, zmin=0.0, zmax=1.0,
            hovertemplate="%{customdata[0]}<br>source %{customdata[1]}<br>weight %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title, height=min(900, 22 * z.shape[0] + 160), margin=dict(l=10, r=10, t=70 if title else 10, b=10),
        xaxis=dict(tickvals=list(range(z.shape[1])), ticktext=labels[: z.shape[1]], side="top"),
        yaxis=dict(tickvals=list(range(z.shape[0])), ticktext=row_labels, autorange="reversed"),
    )
    return fig


# -- the token view: the prompt as coloured text, CircuitsVis-style, in one self-contained document --

TOKEN_VIEW_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 15px; margin: 8px; color: #111; }
h1 { font-size: 16px; margin: 0 0 6px; }
.controls { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; margin-bottom: 8px; font-size: 13px; }
#tokens { line-height: 2.1; padding: 6px; border: 1px solid #ddd; border-radius: 6px; }
.tok { white-space: pre; padding: 2px 1px; margin: 0 1px; border-radius: 3px; cursor: pointer; }
.tok.focus { outline: 2px dashed #e6550d; }
.tok.pinned { outline: 3px solid #e6550d; }
#info { margin-top: 8px; font-size: 13px; min-height: 2.6em; }
.legend { display: flex; align-items: center; gap: 6px; font-size: 12px; }
.bar { width: 140px; height: 10px; border: 1px solid #ccc; background: linear-gradient(to right, rgba(8,81,156,0), rgba(8,81,156,1)); }
"""

# Reads its data from the JSON block (never from markup); every token reaches the page through
# textContent, so no prompt text is ever parsed as HTML or code.
TOKEN_VIEW_JS = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("token-view-data").textContent);
  var P = data.pattern, n = data.tokens.length;
  var box = document.getElementById("tokens"), info = document.getElementById("info");
  var logBox = document.getElementById("log"), lo = document.getElementById("legend-lo");
  var spans = [], pinned = null, hovered = null;
  document.getElementById("title").textContent = data.title;
  logBox.checked = data.log;
  function mode() { return document.querySelector("input[name=mode]:checked").value; }
  function level(w) {  /* 0..1: the colour's strength */
    if (!(w > 0)) return 0;
    if (!logBox.checked) return Math.min(1, w);
    var bottom = Math.log10(data.floor);
    return Math.max(0, Math.min(1, (Math.log10(Math.max(w, data.floor)) - bottom) / -bottom));
  }
  function weight(focus, j) { return mode() === "to" ? P[focus][j] : P[j][focus]; }
  function quoted(i) { return i + " \\u201c" + data.shown[i] + "\\u201d"; }
  function paint() {
    var f = hovered !== null ? hovered : (pinned !== null ? pinned : data.focus);
    var to = mode() === "to", ranked = [];
    for (var j = 0; j < n; j++) {
      var w = weight(f, j), a = level(w);
      spans[j].style.backgroundColor = "rgba(8, 81, 156, " + a.toFixed(3) + ")";
      spans[j].style.color = a > 0.55 ? "#fff" : "#111";
      spans[j].dataset.weight = String(w);
      spans[j].classList.toggle("focus", j === f);
      spans[j].classList.toggle("pinned", j === pinned);
      spans[j].title = (to ? "weight from " + quoted(f) + " to " + quoted(j) : "weight from " + quoted(j) + " to " + quoted(f)) + ": " + w.toFixed(4);
      if (w > 0) ranked.push([w, j]);
    }
    ranked.sort(function (a, b) { return b[0] - a[0]; });
    var top = ranked.slice(0, 5).map(function (r) { return quoted(r[1]) + " " + r[0].toFixed(3); }).join(", ");
    info.textContent = "Token " + quoted(f) + (to ? " attends to: " : " is attended to by: ") + (top || "nothing") +
      (pinned !== null ? "  (pinned: click it again to unpin)" : "  (click a token to pin it)");
    lo.textContent = logBox.checked ? String(data.floor) : "0";
    document.body.dataset.focus = String(f);
  }
  function enter(i) { hovered = i; paint(); }
  for (var i = 0; i < n; i++) {
    var s = document.createElement("span");
    s.className = "tok";
    s.textContent = data.shown[i];
    s.dataset.i = String(i);
    s.tabIndex = 0;
    s.addEventListener("mouseenter", enter.bind(null, i));
    s.addEventListener("focus", enter.bind(null, i));
    s.addEventListener("click", function (k) { pinned = pinned === k ? null : k; paint(); }.bind(null, i));
    box.appendChild(s);
    spans.push(s);
    if (data.newline[i]) box.appendChild(document.createElement("br"));
  }
  box.addEventListener("mouseleave", function () { hovered = null; paint(); });
  logBox.addEventListener("change", paint);
  document.querySelectorAll("input[name=mode]").forEach(function (r) { r.addEventListener("change", paint); });
  paint();
})();
"""


def _script_safe_json(value) -> str:
    """JSON that cannot end its <script> block or open a comment there: '<', '>' and '&' as \\u
    escapes (still the same JSON), non-ASCII too."""
    text = json.dumps(value, ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def token_view_data(
    pattern: Float[Tensor, "dest src"], str_tokens: list[str], title: str = "", *,
    log_scale: bool = False, log_floor: float = LOG_FLOOR, focus: int | None = None,
) -> dict:
    """What the token view shows: the tokens (raw, and as drawn: newline ↵ and tab ⇥ made
    visible, an empty token ∅), the pattern [dest][src] rounded to 6 decimals, the initial
    colour scale and the token in focus before any hover (default: the last)."""
    z = _as_array(pattern)
    n = len(str_tokens)
    if z.shape != (n, n):
        raise ValueError(f"pattern of shape {tuple(z.shape)} for {n} tokens: expected ({n}, {n})")
    shown = [t.replace("\n", "↵").replace("\t", "⇥") or "∅" for t in str_tokens]
    return {
        "title": title,
        "tokens": list(str_tokens),
        "shown": shown,
        "newline": ["\n" in t for t in str_tokens],
        "pattern": [[round(float(v), 6) for v in row] for row in np.nan_to_num(z)],
        "log": bool(log_scale),
        "floor": float(log_floor),
        "focus": (n - 1 if focus is None else int(focus)) if n else 0,
    }


def token_view_html(
    pattern: Float[Tensor, "dest src"], str_tokens: list[str], title: str = "", *,
    log_scale: bool = False, log_floor: float = LOG_FLOOR, focus: int | None = None,
) -> str:
    """One head's attention as the prompt's text, a self-contained HTML document (no network:
    its Content-Security-Policy allows nothing but its own script, by hash, and inline styles).
    Hover a token (or focus it with Tab) to colour every token by the weight it gets from the
    hovered one; switched to "attended to by", by the weight it gives to the hovered one; click
    to pin a token. Works standalone (write it to an .html file) and in Streamlit (st.iframe).
    The data sits in a JSON block (`token_view_data`), escaped so no prompt text can end it."""
    data = token_view_data(pattern, str_tokens, title, log_scale=log_scale, log_floor=log_floor, focus=focus)
    digest = base64.b64encode(hashlib.sha256(TOKEN_VIEW_JS.encode()).digest()).decode()
    csp = f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<title>{html.escape(title or "attention")}</title>
<style>{TOKEN_VIEW_CSS}</style>
</head><body>
<h1 id="title"></h1>
<div class="controls">
<label><input type="radio" name="mode" value="to" checked> where the hovered token attends</label>
<label><input type="radio" name="mode" value="from"> which tokens attend to it</label>
<label><input type="checkbox" id="log"> log colour scale</label>
<span class="legend"><span id="legend-lo">0</span><span class="bar"></span><span>1 (weight)</span></span>
</div>
<div id="tokens"></div>
<div id="info"></div>
<script type="application/json" id="token-view-data">{_script_safe_json(data)}</script>
<script>{TOKEN_VIEW_JS}</script>
</body></html>
"""
