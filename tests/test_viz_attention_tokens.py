"""The Attention view's figures as pure functions (issue 27): the token view's document carries exactly
the pattern and the tokens and no prompt text can break out of it; the log colour scale's values and
colour bar; the thumbnails' labels, click targets and the head a click selects."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from interp.viz.attention import (
    LOG_FLOOR,
    TOKEN_VIEW_JS,
    attention_figure,
    head_from_selection,
    head_grid_figure,
    log_weights,
    token_view_data,
    token_view_html,
)

HOSTILE = [
    "<bos>",
    "</script><script>alert(1)</script>",
    " <img src=x onerror=alert(2)>",
    "<!--",
    " \u2028\u2029",
    "\"'`${x}\\",
    " &amp;",
    "\n",
    "",
]


def _pattern(n: int, seed: int = 0) -> np.ndarray:
    """A causal attention pattern: lower triangular, rows sum to 1."""
    z = np.tril(np.random.default_rng(seed).random((n, n)) + 0.01)
    return z / z.sum(-1, keepdims=True)


class _Doc(HTMLParser):
    """The document as a browser's parser sees it: every element opened, and each <script>'s text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self._in: dict | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in, self._text = dict(attrs), []

    def handle_data(self, data):
        if self._in is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._in is not None:
            self.scripts.append((self._in, "".join(self._text)))
            self._in = None


def _parse(doc: str) -> _Doc:
    parser = _Doc()
    parser.feed(doc)
    parser.close()
    return parser


def test_token_view_embeds_exactly_the_pattern_and_the_tokens():
    tokens = ["<bos>", "When", " Mary", " and", " John", "\n", " went"]
    z = _pattern(len(tokens))
    doc = token_view_html(torch.tensor(z, dtype=torch.float32), tokens, title="L3H1")
    parsed = _parse(doc)
    (attrs, text), (_, code) = parsed.scripts
    assert attrs == {"type": "application/json", "id": "token-view-data"}
    data = json.loads(text)
    assert data == token_view_data(torch.tensor(z, dtype=torch.float32), tokens, "L3H1")
    np.testing.assert_allclose(np.array(data["pattern"]), z, atol=1e-6)
    assert data["tokens"] == tokens and data["title"] == "L3H1"
    assert data["shown"][5] == "↵" and data["newline"] == [False] * 5 + [True, False]
    assert data["focus"] == len(tokens) - 1 and data["log"] is False and data["floor"] == LOG_FLOOR
    assert code == TOKEN_VIEW_JS
    assert "textContent" in code and "innerHTML" not in code  # tokens reach the page as text only


def test_token_view_options_and_bad_shapes():
    z = _pattern(3)
    data = token_view_data(z, ["a", "b", ""], log_scale=True, log_floor=1e-3, focus=1)
    assert data["log"] is True and data["floor"] == 1e-3 and data["focus"] == 1 and data["shown"][2] == "∅"
    with pytest.raises(ValueError, match=r"expected \(4, 4\)"):
        token_view_data(z, ["a", "b", "c", "d"])


def test_token_view_is_offline_and_allows_only_its_own_script():
    doc = token_view_html(_pattern(3), ["a", "b", "c"], title="t")
    csp = next(a["content"] for t, a in _parse(doc).tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    digest = base64.b64encode(hashlib.sha256(TOKEN_VIEW_JS.encode()).digest()).decode()
    assert csp == f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'"
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", doc)  # nothing fetched from anywhere
    assert "http://" not in doc and "https://" not in doc


def test_prompt_text_cannot_inject_markup_or_script():
    """Tokens and title full of markup: the parser sees our elements and no others, two scripts
    (the data and the code), the data decodes back to the very strings, and the title is text."""
    n = len(HOSTILE)
    title = "L0H0 </title><script>alert(3)</script>"
    doc = token_view_html(_pattern(n), HOSTILE, title=title)
    parsed = _parse(doc)
    assert [t for t, _ in parsed.tags] == ["html", "head", "meta", "meta", "title", "style", "body", "h1", "div",
                                          "label", "input", "label", "input", "label", "input", "span", "span",
                                          "span", "span", "div", "div", "script", "script"]  # fmt: skip
    assert not any(t in ("img", "iframe", "object") for t, _ in parsed.tags)
    assert len(parsed.scripts) == 2 and doc.count("</script") == 2
    data = json.loads(parsed.scripts[0][1])
    assert data["tokens"] == HOSTILE and data["title"] == title
    assert "<" not in parsed.scripts[0][1] and ">" not in parsed.scripts[0][1] and "&" not in parsed.scripts[0][1]
    assert "<title>L0H0 &lt;/title&gt;&lt;script&gt;alert(3)&lt;/script&gt;</title>" in doc
    assert "<img" not in doc and "<script>alert" not in doc and "<!--" not in doc  # raw, nowhere


def test_log_scale_values_and_colour_bar():
    z = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.5, 1e-6, 0.499999]])
    tokens = ["<bos>", " a", " b"]
    linear = attention_figure(z, tokens, title="L18H6")
    trace = linear.data[0]
    np.testing.assert_allclose(trace.z, z)
    assert (trace.zmin, trace.zmax) == (0.0, 1.0) and trace.colorbar.title.text == "weight"
    assert "%{z:.3f}" in trace.hovertemplate

    logged = attention_figure(z, tokens, title="L18H6", log_scale=True, value_label="weight, renormalised")
    trace = logged.data[0]
    np.testing.assert_allclose(trace.z, np.log10(np.clip(z, LOG_FLOOR, None)))
    assert trace.z[0][0] == 0.0 and trace.z[1][1] == pytest.approx(-1.0) and trace.z[2][1] == pytest.approx(-4.0)
    assert (trace.zmin, trace.zmax) == (pytest.approx(-4.0), 0.0)
    assert trace.colorbar.title.text == "weight, renormalised<br>(log scale)"
    assert list(trace.colorbar.tickvals) == [-4, -3, -2, -1, 0]
    assert list(trace.colorbar.ticktext) == ["0.0001", "0.001", "0.01", "0.1", "1"]
    assert trace.customdata[1][1][2] == "0.1" and "%{customdata[2]}" in trace.hovertemplate  # hover: the weight
    np.testing.assert_allclose(log_weights(z, 1e-2), np.log10(np.clip(z, 1e-2, None)))
    assert logged.layout.title.text == "L18H6"


def test_attention_figure_keeps_its_callers_signature():
    z = _pattern(4)
    fig = attention_figure(torch.tensor(z), ["a", "b", "c", "d"], "positional title")  # training.py passes it so
    assert fig.layout.title.text == "positional title"
    np.testing.assert_allclose(fig.data[0].z, z, rtol=1e-6)


def test_thumbnails_are_labelled_and_clickable():
    n_heads, n = 5, 4
    z = np.stack([_pattern(n, seed=h) for h in range(n_heads)])
    fig = head_grid_figure(torch.tensor(z), ["a", "b", "c", "d"], layer=7, cols=3, selected=3)
    heatmaps, targets = fig.data[:n_heads], fig.data[n_heads:]
    assert [t.type for t in heatmaps] == ["heatmap"] * n_heads and [t.type for t in targets] == ["scatter"] * n_heads
    for h in range(n_heads):
        np.testing.assert_allclose(heatmaps[h].z, z[h], rtol=1e-6)
        assert heatmaps[h].hovertemplate.startswith(f"L7H{h}<br>")
        # each click target sits at its thumbnail's centre, on its axes, and names the head
        assert (targets[h].xaxis, targets[h].yaxis) == (heatmaps[h].xaxis, heatmaps[h].yaxis)
        assert list(targets[h].x) == [1.5] and list(targets[h].y) == [1.5]
        assert [list(c) for c in targets[h].customdata] == [[7, h]] and targets[h].name == f"L7H{h}"
        assert targets[h].hovertemplate.startswith(f"<b>L7H{h}</b>: click")
    labels = [a.text for a in fig.layout.annotations]
    assert labels == ["L7H0", "L7H1", "L7H2", "<b>L7H3 ▲</b>", "L7H4"]
    (frame,) = fig.layout.shapes  # the selected head's thumbnail framed
    assert (frame.xref, frame.yref) == (f"{heatmaps[3].xaxis} domain", f"{heatmaps[3].yaxis} domain")
    assert fig.layout.hoverdistance == -1  # anywhere on a thumbnail finds its click target
    assert sum(bool(t.showscale) for t in heatmaps) == 1 and heatmaps[0].colorbar.title.text == "weight"
    mean_bos = z[2][:, 0].mean()
    assert f"mean weight on the first token: {mean_bos:.2f}" in targets[2].hovertemplate

    plain = head_grid_figure(z, ["a", "b", "c", "d"], layer=0)
    assert not plain.layout.shapes and [a.text for a in plain.layout.annotations] == [f"L0H{h}" for h in range(5)]
    logged = head_grid_figure(z, ["a", "b", "c", "d"], layer=0, log_scale=True)
    np.testing.assert_allclose(logged.data[1].z, np.log10(np.clip(z[1], LOG_FLOOR, None)))
    assert logged.data[0].colorbar.title.text == "weight<br>(log scale)"


def test_head_from_selection():
    assert head_from_selection([{"curve_number": 6, "x": 1.5, "y": 1.5, "customdata": [7, 2]}]) == (7, 2)
    assert head_from_selection([{"x": 1, "y": 2}, {"customdata": [3.0, 1.0]}]) == (3, 1)
    assert head_from_selection([]) is None and head_from_selection(None) is None
    assert head_from_selection([{"customdata": ["0: a", "1: b"]}]) is None  # a heatmap cell's hover data
    assert head_from_selection([{"customdata": [1, 2, 3]}]) is None
