"""Heads view: detector scores of every head (layer x head heatmap per kind), then one head --
clicked on the heatmap's markers or picked -- with its pattern and its causal effect."""

from __future__ import annotations

import streamlit as st

from apps import state
from interp.heads import KINDS, FindConfig, heads_report
from interp.heads.scores import MEASURES
from interp.heads.validate import ablation_effects
from interp.viz.attention import attention_figure
from interp.viz.heads import score_heatmaps

def confirmed_rule(cfg: FindConfig, validated: bool) -> str:
    """The rule the table's "confirmed" column follows (interp.heads.find._validate), in words, with
    this run's thresholds."""
    rule = (f"**Confirmed** means all of: a pattern score of at least {cfg.min_score:g}; for an induction head, an OV "
            f"copying score of at least {cfg.min_copying:g}; and a causal effect told apart from noise: mean-ablating "
            f"the head alone raises the loss on the repeated half by at least {cfg.min_effect:g} nats at the lower end "
            f"of its 95% interval (for a previous-token head, lowering later induction heads' scores by at least "
            f"{cfg.min_induction_drop:g} also counts). A large effect with a score below {cfg.min_score:g} is therefore "
            f"not confirmed. **Flagged**: a high score but neither ablation can exceed {cfg.min_effect:g} nats.")  # fmt: skip
    return rule if validated else rule + " Tick **Causal check** to test the reported heads: without it none is confirmed."


st.title("Heads")
spec, prompt = state.current_spec(), state.current_prompt()
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
               "Markers are the reported heads: click one to inspect it.")
    event = st.plotly_chart(score_heatmaps(report.scores, report.findings, measure=report.measure), key="heads_heatmap",
                            on_select="rerun", selection_mode="points")
    points = (event.selection or {}).get("points", []) if event else []
    if points and "x" in points[0] and "y" in points[0]:
        st.session_state["heads_layer"], st.session_state["heads_head"] = int(points[0]["y"]), int(points[0]["x"])
    rows = [f.to_dict() for f in report.findings]
    st.dataframe(rows, hide_index=True, key="heads_table")
    st.caption(confirmed_rule(cfg, validate))

    best = report.findings[0] if report.findings else None
    st.subheader("One head")
    layer, head = state.pick_head(model, "heads", (best.layer, best.head) if best else (0, 0))
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
