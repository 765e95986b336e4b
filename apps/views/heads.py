"""Heads view: detector scores of every head (layer x head heatmap per kind, every cell clickable),
the reported heads with each verdict's reason, then one head -- clicked on the heatmap or picked --
with its pattern, its causal effect on repeated tokens, its ablation on the sidebar's prompt, and
its OV and QK circuits' top tokens (interp.heads.page)."""

from __future__ import annotations

import streamlit as st

from apps import state
from interp.heads import KINDS, FindConfig, heads_report, page
from interp.heads.scores import MEASURES
from interp.heads.validate import ablation_effects
from interp.viz.attention import attention_figure
from interp.viz.heads import ablation_figure, clicked_head, score_heatmaps

OV_TOP, QK_TOP, QK_TOKENS = 5, 20, 2048  # outputs per source token, pairs shown, token sample the pairs come from


def confirmed_rule(cfg: FindConfig, validated: bool) -> str:
    """The rule the table's "confirmed" column follows (interp.heads.find._validate), in words, with
    this run's thresholds."""
    rule = (f"**Confirmed** means all of: a pattern score of at least {cfg.min_score:g}; for an induction head, an OV "
            f"copying score of at least {cfg.min_copying:g}; and a causal effect told apart from noise: mean-ablating "
            f"the head alone raises the loss on the repeated half by at least {cfg.min_effect:g} nats at the lower end "
            f"of its 95% interval (for a previous-token head, lowering later induction heads' scores by at least "
            f"{cfg.min_induction_drop:g} also counts). A large effect with a score below {cfg.min_score:g} is therefore "
            f"not confirmed. **Flagged**: a high score but neither ablation can exceed {cfg.min_effect:g} nats.")  # fmt: skip
    rule += (" The table's **why** column gives the comparisons that decided each verdict." if validated
             else " Tick **Causal check** to test the reported heads: without it none is confirmed.")
    return rule


def _apply_click(model) -> None:
    """A click on the heatmap (its selection, from the last run) picks that head in the Layer/Head
    boxes; a click already applied is not applied again, so the boxes can be changed by hand."""
    event = st.session_state.get("heads_heatmap")
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    head = clicked_head(points, model.info.n_layers, model.info.n_heads)
    if head is not None and st.session_state.get("_heads_last_click") != head:
        st.session_state["heads_layer"], st.session_state["heads_head"] = head
    st.session_state["_heads_last_click"] = head


def _picked(model, default: tuple[int, int]) -> tuple[int, int]:
    """The head the Layer/Head boxes will show (state.pick_head's rule), known before they are drawn."""
    layer = st.session_state.get("heads_layer", default[0])
    head = st.session_state.get("heads_head", default[1])
    return min(max(0, int(layer)), model.info.n_layers - 1), min(max(0, int(head)), model.info.n_heads - 1)


def _table(findings) -> list[dict]:
    """The reported heads, the verdict and its reason right after the score."""
    rows = []
    for f in findings:
        d = f.to_dict()
        rows.append({**{k: d.pop(k) for k in ("kind", "layer", "head", "score", "verdict", "why") if k in d}, **d})
    return rows


def prompt_ablation_panel(model, spec: str, prompt: str, layer: int, head: int) -> None:
    st.markdown(f"**Ablating L{layer}H{head} on the prompt** (the sidebar's)")
    tokens = model.to_tokens(prompt)
    result = state.remember(("head-prompt-ablation", spec, prompt, layer, head), f"Ablating L{layer}H{head} on the prompt",
                            lambda progress: page.prompt_ablation(model, tokens, (layer, head)))  # fmt: skip
    rows = page.ablation_table(model, result)
    st.dataframe(rows, hide_index=True, key="heads_prompt_ablation")
    st.plotly_chart(ablation_figure(result, model.to_str_tokens(tokens[0]),
                                    f"L{layer}H{head} ablated: per-token loss change on the prompt"), key="heads_prompt_loss")  # fmt: skip
    st.caption("The head's output (its z, one vector per query head) is replaced by its mean over this prompt's "
               "positions (mean) or by 0 (zero), the rest of the model untouched. Top before/after: the next-token "
               "prediction after the last token; KL(clean ‖ ablated) of that distribution; Δ loss: the change of "
               "each token's next-token loss (bar p predicts token p from the tokens before it), mean over the prompt "
               "and at the last token.")  # fmt: skip


def circuit_panels(model, spec: str, prompt: str, layer: int, head: int) -> None:
    left, right = st.columns(2)
    sources = page.prompt_sources(model, prompt)
    ov = state.remember(("head-ov", spec, prompt, layer, head), f"OV circuit of L{layer}H{head}",
                        lambda progress: page.ov_top_tokens(model, (layer, head), sources, OV_TOP))  # fmt: skip
    group = model.info.n_heads // model.info.n_kv_heads
    kv = f"; it reads KV head {page.kv_head(model, head)} (GQA: {group} query heads per KV head)" if group > 1 else ""
    with left:
        st.markdown(f"**OV circuit**: what L{layer}H{head} writes when it attends to each of the prompt's tokens")
        st.dataframe(page.ov_table(model, ov), hide_index=True, key="heads_ov")
        st.caption(f"Row s of W_E·W_V·W_O·W_U{kv}: the output tokens whose logits attending to token s raises most, "
                   "and the rank of s itself among them (0: the head copies s). Folded in: the head's input norm "
                   "(each embedding normalized as if it were the whole residual stream, times the norm's weight) "
                   "and the final norm's weight (and centring for LayerNorm). Not folded: the final norm's "
                   "per-position scale (positive: ranks unchanged, logits up to that scale), the biases, "
                   "positional embeddings and every other layer -- exact for a layer-0 head, an approximation "
                   "deeper in.")  # fmt: skip
    ids = page.qk_token_set(model, QK_TOKENS, extra=sources)
    pairs = state.remember(("head-qk", spec, prompt, layer, head), f"QK circuit of L{layer}H{head}",
                           lambda progress: page.qk_top_pairs(model, (layer, head), ids, QK_TOP))  # fmt: skip
    with right:
        st.markdown(f"**QK circuit**: the query/key token pairs L{layer}H{head} scores highest")
        st.dataframe(page.qk_table(model, pairs), hide_index=True, key="heads_qk")
        st.caption(f"Score (ln1(E[q])·W_Q)·(ln1(E[k])·W_K{kv and ' of its KV head'}) / √d_head from the embeddings "
                   f"alone, over {pairs.n_tokens} tokens ({QK_TOKENS} sampled from the vocabulary plus the prompt's), "
                   "norm weights folded as for OV, biases left out. Positional parts are ignored: no positional "
                   "embeddings, and rotary is not applied -- the score a query and key at the same position would "
                   "get; at other distances rotary changes it.")  # fmt: skip


st.title("Heads")
spec, prompt = state.current_spec(), state.current_prompt()
shown = False  # the head's panels below run only when the page above them could be drawn
with state.shows_errors():
    model = state.get_model(spec)
    c1, c2, c3, c4, c5 = st.columns([3, 2, 1, 2, 2])
    kinds = c1.multiselect("Kinds", KINDS, default=list(KINDS), key="heads_kinds")
    source = c2.radio("Score on", ["repeated random tokens", "the prompt"], key="heads_source", horizontal=True)
    top = int(c3.number_input("Top", 1, 20, 3, key="heads_top", help="heads reported per kind"))
    measure = c4.selectbox("Measure", MEASURES, key="heads_measure",
                           help="target: mean attention on the target over the rows that have one (Olsson et al.); "
                                "mul / abs: TransformerLens detect_head's")
    validate = c5.checkbox("Causal check", key="heads_validate",
                           help="mean- and zero-ablate each reported head on repeated tokens (slower)")
    seg_len = max(2, min(32, (model.info.n_ctx - 1) // 2))
    cfg = FindConfig(n_seqs=8, seg_len=seg_len, validate_seqs=4, measure=measure)
    text = prompt if source == "the prompt" else None
    key = ("heads", spec, tuple(kinds), top, text, validate, cfg.n_seqs, cfg.seg_len, measure)
    report = state.remember(key, "Scoring heads", lambda progress: heads_report(
        model, kinds, top, text=text, validate=validate, progress=progress, config=cfg))
    st.caption(f"Pattern scores ({report.measure}) on {report.n_tokens} tokens "
               f"({'the prompt' if text else f'{cfg.n_seqs} repeated random sequences'}). {report.describe_measure()}. "
               "Click any cell to open that head below (the ring marks it); markers are the reported heads.")
    best = report.findings[0] if report.findings else None
    default = (best.layer, best.head) if best else (0, 0)
    _apply_click(model)
    st.plotly_chart(score_heatmaps(report.scores, report.findings, measure=report.measure, picked=_picked(model, default)),
                    key="heads_heatmap", on_select="rerun", selection_mode="points")  # fmt: skip
    st.dataframe(_table(report.findings), hide_index=True, key="heads_table")
    st.caption(confirmed_rule(cfg, validate))

    st.subheader("One head")
    layer, head = state.pick_head(model, "heads", default)
    scores = ", ".join(f"{k} {float(report.scores[k][layer, head]):.3f}" for k in report.scores)
    st.markdown(f"**L{layer}H{head}** pattern scores: {scores}")
    left, right = st.columns(2)
    with left:
        patterns, tokens = state.layer_patterns(spec, prompt, layer)
        st.plotly_chart(attention_figure(patterns[head], tokens, title=f"L{layer}H{head} on the prompt"), key="heads_on_prompt")
    with right:
        patterns, tokens = state.probe_patterns(spec, layer, seg_len=min(12, seg_len))
        st.plotly_chart(attention_figure(patterns[head], tokens, title=f"L{layer}H{head} on repeated random tokens"),
                        key="heads_on_probe")
    from interp.data.synthetic import repeated_tokens

    effect = state.remember(("head-effect", spec, layer, head), f"Ablating L{layer}H{head}", lambda progress: ablation_effects(
        model, repeated_tokens(model, 4, seg_len, seed=1), [(layer, head)], progress=progress))
    m1, m2 = st.columns(2)
    for col, mode in ((m1, "mean"), (m2, "zero")):
        e = effect[mode][0].interval
        col.metric(f"Δ loss on the repeated half, {mode}-ablated", f"{e.value:+.3f} nats",
                   help=f"95% bootstrap interval over 4 sequences: [{e.lo:+.3f}, {e.hi:+.3f}]")
    st.caption("Causal effect: how much worse the model predicts the second copy of a repeated random "
               "sequence when this head alone is ablated (induction heads matter here); mean over 4 sequences, "
               "its 95% interval in the help.")
    shown = True

if shown:
    with state.shows_errors():  # each panel on its own: one that fails leaves the other standing
        prompt_ablation_panel(model, spec, prompt, layer, head)
    with state.shows_errors():
        circuit_panels(model, spec, prompt, layer, head)
