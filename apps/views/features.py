"""Features view, in the spirit of a Neuronpedia feature page: pick a feature index (and its
dictionary), then one feature's activation examples with the token highlighted, the tokens its
decoder row promotes, its density among the layer's features and the most similar features by
decoder direction; agreement by layer; and the features behind the prompt's prediction, with an
off switch. Each panel shows its own input errors; the others keep working."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps import state
from interp.features import load as load_dictionary
from interp.features.memories import decoder_similar, open_feature_index
from interp.features.trace import feature_trace, switch_off
from interp.viz.attention import predictions_figure
from interp.viz.features import density_figure, feature_trace_figure
from interp.viz.memories import agreement_figure, triggers_html, value_tokens_figure


def _found(marker: str) -> list[str]:
    out = []
    for root in (Path("out"), Path("runs")):
        if root.is_dir():
            out += [str(p.parent) for p in root.glob(f"**/{marker}")]
    return sorted(set(out))


@st.cache_resource(max_entries=4, show_spinner="Opening the feature index…")
def _index(folder: str, stamp: float):
    return open_feature_index(folder)


@st.cache_resource(max_entries=4, show_spinner="Loading the dictionary…")
def _dictionary(folder: str, stamp: float):
    return load_dictionary(folder)


def _stamp(folder: str, name: str) -> float:
    p = Path(folder).expanduser() / name
    return p.stat().st_mtime if p.is_file() else 0.0


def pick(label: str, key: str, marker: str, example: str) -> str | None:
    found = [f for f in _found(marker)]
    c1, c2 = st.columns(2)
    choice = c1.selectbox(label, found, key=f"{key}_found", placeholder="none under ./out or ./runs") if found else None
    typed = c2.text_input(f"…or a {label.lower()} folder", key=key, placeholder=example).strip()
    return str(state.user_path(typed, f"{label.lower()} folder")) if typed else choice


def feature_page(index, d) -> None:
    f1, f2 = st.columns(2)
    layer = f1.selectbox("Layer", index.layers, key="feat_layer")
    feature = int(f2.number_input("Feature", 0, max(index.d_mlp - 1, 0), key="feat_feature"))
    view = index.show(layer, feature)
    st.markdown(f"**Feature {layer}:{feature}**: active on {view.active_fraction:.2%} of indexed tokens")
    left, right = st.columns([3, 2])
    with left:
        st.markdown("Top activating contexts (activating token highlighted, the next token grey)")
        if view.triggers:
            st.html(triggers_html(view, 15))
        else:
            st.info("This feature never fired on the indexed tokens.")
    with right:
        st.plotly_chart(value_tokens_figure(view), key="feat_values")
    active = index.keys(layer)["active"][0].float() / max(index.n_tokens, 1)
    d1, d2 = st.columns(2)
    d1.plotly_chart(density_figure(active.tolist(), view.active_fraction, f"layer {layer} feature density"),
                    key="feat_density")  # fmt: skip
    if d is not None:
        similar = decoder_similar(d, layer, feature)
        d2.dataframe([{"feature": f"{layer}:{f}", "decoder cosine": round(c, 3)} for f, c in similar],
                     hide_index=True, key="feat_similar")  # fmt: skip
    else:
        d2.info("Give the dictionary folder to list the most similar features.")


def trace_panel(model, d, spec: str, prompt: str) -> None:
    st.subheader("Features behind the prediction")
    t = state.remember(("feat-trace", spec, prompt, str(d.cfg.to_dict())), "Tracing the prediction",
                       lambda progress: feature_trace(model, d, prompt, top=10, per_layer=3))  # fmt: skip
    st.markdown(f"Prediction **{t.token!r}** (p = {t.prob:.3f}); a feature's contribution is its activation × its "
                "decoder row's logit for that token through the final norm. Per layer, the MLP's effect is the "
                "features' sum + the bias/skip + the transcoder's error.")  # fmt: skip
    st.plotly_chart(feature_trace_figure(t), key="feat_trace")
    st.dataframe([{"layer": r.layer, "MLP effect": round(r.mlp_effect, 4), "features": round(r.feature_effect, 4),
                   "bias/skip": round(r.bias_effect, 4),
                   "error": round(r.error_effect, 4), "top features": ", ".join(f.name for f in r.features)}
                  for r in t.layers], hide_index=True, key="feat_trace_layers")  # fmt: skip
    names = {f.name: (f.layer, f.feature) for f in t.top}
    chosen = st.multiselect("Switch off (together) and see the new prediction", list(names), key="feat_off")
    if chosen:
        got = state.remember(("feat-off", spec, prompt, tuple(chosen)), "Switching features off",
                             lambda progress: switch_off(model, d, prompt, [names[c] for c in chosen]))  # fmt: skip
        st.markdown(f"With {', '.join(chosen)} off, the top prediction is **{got['after'][0][0]!r}** "
                    f"(p = {got['after'][0][1]:.3f}; before {got['before'][0][0]!r}, p = {got['before'][0][1]:.3f})")
        st.plotly_chart(predictions_figure([a for a, _ in got["after"]], [p for _, p in got["after"]],
                                           "With the chosen features off"), key="feat_after")  # fmt: skip


st.title("Features")
spec, prompt = state.current_spec(), state.current_prompt()
index = d = model = None
with state.shows_errors():
    folder = pick("Feature index", "feat_index", "manifest.json", "e.g. out/features-index")
    if folder:
        index = _index(folder, _stamp(folder, "manifest.json"))
with state.shows_errors():
    dict_folder = pick("Dictionary", "feat_dict", "dictionary.json", "e.g. out/transcoders")
    if dict_folder:
        d = _dictionary(dict_folder, _stamp(dict_folder, "dictionary.json"))
if index is None:
    st.info("Pick or type a feature index (`interp features index`) to browse features.")
else:
    st.caption(repr(index))
    page, agreement = st.tabs(["Feature", "Agreement by layer"])
    with page, state.shows_errors():
        feature_page(index, d)
    with agreement, state.shows_errors():
        st.plotly_chart(agreement_figure(index.agreement(), "features by layer"), key="feat_agreement")
if d is not None:
    with state.shows_errors():
        model = state.get_model(spec)
    if model is not None:
        with state.shows_errors():
            if d.site.is_transcoder:
                trace_panel(model, d, spec, prompt)
            else:
                st.info("The trace in feature space needs a transcoder (site mlp).")
