"""IOI circuit view: discover the circuit (with a progress bar) or open a saved one; show it as a
graph by class, the path-patching heatmaps, the faithfulness, and the prompt through its heads; the
verdicts `interp ioi` prints (faithful, complete, minimal: interp.circuits.verdict), each with its rule
and numbers, and each head's reason for passing or failing minimality.
Every discovery is saved to the runs folder (circuit.json and the figures, as `interp ioi --out`
writes them, with its settings); a saved discovery, the dashboard's or the CLI's, opens again in
any session, and discovery with settings saved before opens that result instead of recomputing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from apps import state
from interp.circuits.pipeline import effects_json, read_circuit, write_report
from interp.circuits.verdict import head_minimality, ioi_verdicts
from interp.runs import read_run
from interp.types import CORRUPTIONS
from interp.viz.attention import attention_rows_figure
from interp.viz.circuits import FLOW, circuit_graph, faithfulness_by_heads, patching_heatmap


def positions_of(circuit: dict, head: str) -> set[str]:
    """The class position of a head ("layer.head") in a circuit.json."""
    layer, h = (int(x) for x in head.split("."))
    return {circuit.get("class_positions", {}).get(c) for c, hs in circuit["classes"].items()
            if (layer, h) in {tuple(x) for x in hs}}  # fmt: skip


DISCOVER, OPEN = "discover on this model", "open a saved run"
IOI_EXAMPLE = "When Mary and John went to the store, John gave a drink to"  # Wang et al.'s example


def saved_effects(path) -> dict | None:
    """The effects a save kept: circuit.json's own (interp ioi since 2026-12-07), else a dashboard save's
    run.json extra; None where neither has them (an older CLI folder)."""
    import json

    folder = Path(path)
    folder = folder.parent if folder.is_file() else folder
    for name, keys in (("circuit.json", ("effects",)), ("run.json", ("extra", "effects"))):
        try:
            got = json.loads((folder / name).read_text())
            for k in keys:
                got = got.get(k)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(got, dict):
            return got
    return None


def verdicts(circuit: dict) -> None:
    """Each verdict `interp ioi` prints (faithful, complete, minimal), with its rule; the completeness and
    minimality tables where they were measured, each head with why it passes or fails."""
    got = ioi_verdicts(circuit)
    for name, v in got.items():
        (st.success if v.passed else st.warning)(f"**{name.capitalize()}: {v.word}**. {v.why[0].upper()}{v.why[1:]}.",
                                                 icon="✅" if v.passed else "⚠️")  # fmt: skip
        st.caption(f"{name.capitalize()} rule: {v.rule}.")
    if isinstance(circuit.get("completeness"), list) and circuit["completeness"]:
        st.dataframe(circuit["completeness"], hide_index=True, key="ioi_completeness")
    if "minimality" in got:
        from interp.circuits.evaluate import MIN_MINIMALITY

        threshold = circuit.get("min_minimality", MIN_MINIMALITY)
        st.dataframe([{"head": h, **{k: r.get(k) for k in ("value", "lo", "hi", "passes")}, "why": head_minimality(r, threshold)}
                      for h, r in circuit["minimality"].items()], hide_index=True, key="ioi_minimality")  # fmt: skip


st.title("IOI circuit")
spec = state.current_spec()
with state.shows_errors():
    model = state.get_model(spec)
    st.caption("Indirect-object identification (Wang et al. 2022): in “When Mary and John went to the store, John "
               "gave a drink to”, the model should say “Mary”. Discovery path-patches every head on IOI prompts "
               "against a counterfactual (Wang et al.'s ABC by default), step by step, admitting every head whose path "
               "effect clears the threshold, and sorts them into classes.")
    mode = st.radio("Circuit", [DISCOVER, OPEN], key="ioi_mode", horizontal=True)
    circuit: dict | None = None
    effects: dict | None = None  # discovery's path-patching effects, for the graph's edge widths
    if mode == DISCOVER:
        c1, c2, c3 = st.columns(3)
        n_prompts = int(c1.number_input("Prompts", 1, 256, 16, key="ioi_prompts",
                                        help="discovery prompts (as many held out, from other templates and names)"))
        seed = int(c2.number_input("Seed", 0, 1_000_000, 0, key="ioi_seed"))
        checks = c3.checkbox("Completeness and minimality checks", key="ioi_checks", help="many more ablations (slower)")
        c4, c5 = st.columns(2)
        corruption = c4.radio("Counterfactual", CORRUPTIONS, index=CORRUPTIONS.index("abc"), horizontal=True,
                              key="ioi_corruption", help="what path patching runs the senders on: abc (Wang et al.: "
                              "three other names), s2-io (MIB's: the second S becomes IO), new-s (both S become a new "
                              "name); evaluation mean-ablates with ABC means either way")  # fmt: skip
        from interp.circuits.discover import NAMED_AT_FLOOR, THRESHOLD, DiscoveryConfig

        threshold = float(c5.number_input("Threshold", 0.01, 1.0, THRESHOLD, 0.01, key="ioi_threshold",
                                          help="share of a step's largest path effect a head needs to be admitted"))
        key = ("ioi", spec, n_prompts, seed, checks, corruption, threshold)
        settings = {"n_prompts": n_prompts, "seed": seed, "checks": checks, "corruption": corruption, "threshold": threshold,
                    "named_at_floor": NAMED_AT_FLOOR}  # a result saved under another admission rule is not this one
        report = state.remembered(key)
        saved = state.saved_match("ioi", spec, settings) if report is None else None
        if report is None and st.button("Run discovery again" if saved else "Run discovery", type="primary", key="ioi_run"):
            from interp.circuits.pipeline import run_ioi

            report = state.remember(key, "Discovering the IOI circuit", lambda progress: run_ioi(
                model, n_prompts, seed=seed, checks=checks, progress=progress, corruption=corruption,
                config=DiscoveryConfig(threshold=threshold)))
            state.save_result(key, "ioi", spec, settings, lambda tmp: write_report(report, tmp, model.info.n_layers,
                                                                                   model.info.n_heads),
                              {"effects": effects_json(report.discovery.effects)})  # fmt: skip
        if report is not None:
            circuit = {**report.to_json(), "classes": report.discovery.classes}
            effects = report.discovery.effects
            state.saved_note(key)
        elif saved is not None:  # discovered with these settings before (any session): opened, not recomputed
            circuit = read_circuit(saved.folder, model)
            effects = saved_effects(saved.folder)
            state.opened_note(saved)
            st.caption("Its path-patching heatmaps are the path_*.html pages in that folder.")
        else:
            st.info("Press **Run discovery** to find the circuit on this model (on CPU, SmolLM2 takes a while).")
    else:
        runs = state.saved_runs("ioi", Path("out"))
        picked = state.pick_saved(runs, "ioi_found", "Saved discovery")
        typed = st.text_input("…or a path to circuit.json (or its folder)", key="ioi_json",
                              help="e.g. the folder `interp ioi --out` wrote").strip()
        if typed or picked:
            path = state.user_path(typed, "circuit file") if typed else picked.folder
            circuit = read_circuit(path, model)
            effects = saved_effects(path)
            run = read_run(path) if typed else picked
            if run.kind == "ioi":
                state.opened_note(run)
        else:
            st.info(f"No saved discovery under {state.public(str(state.runs_root()))}/ or out/ yet: discover one here "
                    "(it is saved on its own) or run `interp ioi --out runs/NAME`; or type a path.")  # fmt: skip
        report = None

    if circuit is not None:
        classes = circuit["classes"]
        m = st.columns(4)
        m[0].metric("Heads in the circuit", sum(len(h) for h in classes.values()))
        if circuit.get("faithfulness") is not None:
            ci = circuit.get("faithfulness_ci")
            m[1].metric("Faithfulness F(C)/F(M)", f"{circuit['faithfulness']:.2f}",
                        help="held-out prompts; each class kept at its positions, every other head mean-ablated"
                             + (f"; 95% bootstrap interval [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
        if circuit.get("clean_logit_diff") is not None:
            m[2].metric("Clean logit diff", f"{circuit['clean_logit_diff']:.2f}")
            m[3].metric(f"Corrupted ({circuit.get('corruption', 'abc')}) logit diff", f"{circuit['corrupted_logit_diff']:.2f}")
        if circuit.get("faithfulness_ci") is not None:
            lo, hi = circuit["faithfulness_ci"]
            alo, ahi = circuit["faithfulness_all_positions_ci"]
            st.caption(f"Held out ({circuit.get('n_heldout')} prompts from templates and names discovery never saw; "
                       f"ABC means from {circuit.get('n_abc')} prompts per template): faithfulness "
                       f"{circuit['faithfulness']:.2f} [{lo:.2f}, {hi:.2f}] with "
                       + ("each head kept at its places" if circuit.get("places") else "each class kept at its positions")
                       + f", {circuit['faithfulness_all_positions']:.2f} [{alo:.2f}, {ahi:.2f}] with every circuit head "
                       "kept at every position (95% bootstrap intervals over the prompts).")
            if circuit.get("places") and circuit.get("faithfulness_class_positions") is not None:
                klo, khi = circuit["faithfulness_class_positions_ci"]
                st.caption(f"Places: each head is also kept at the segments where discovery found it working (position "
                           f"threshold {circuit.get('config', {}).get('position_threshold')} of F(M) on the discovery "
                           f"prompts); at its class's position alone the same circuit keeps "
                           f"{circuit['faithfulness_class_positions']:.2f} [{klo:.2f}, {khi:.2f}].")
                added = {h: [s for s in v if s not in positions_of(circuit, h)] for h, v in circuit["places"].items()}
                rows = [{"head": h, "also kept at": ", ".join(v)} for h, v in added.items() if v]
                if rows:
                    st.dataframe(rows, hide_index=True)
        verdicts(circuit)
        from interp.circuits.head_configs import CLASS_POSITIONS

        positions = circuit.get("class_positions") or {c: CLASS_POSITIONS.get(c, "all positions") for c in classes}
        st.plotly_chart(circuit_graph(classes, model.info.n_layers, f"IOI circuit in {model.info.name}", effects,
                                      positions), key="ioi_graph")  # fmt: skip
        if effects is None:
            st.caption("Edges unweighted: this circuit.json keeps no path-patching effects (a discovery saved here "
                       "keeps them; the CLI's path_*.html pages show them).")  # fmt: skip
        if circuit.get("faithfulness_curve"):
            st.plotly_chart(faithfulness_by_heads(circuit["faithfulness_curve"], "Faithfulness against heads kept, held "
                                                  "out (heads added in the order discovery admitted them)"),
                            key="ioi_curve")  # fmt: skip
        if report is not None:
            st.subheader("Path patching")
            names = list(report.discovery.effects)
            for tab, name in zip(st.tabs(names), names):
                with tab:
                    effect = report.discovery.effects[name].nan_to_num(0.0)
                    st.plotly_chart(patching_heatmap(effect, f"Path patching to {name}"), key=f"ioi_path_{name}")

        st.subheader("The prompt through the circuit")
        ioi_prompt = st.text_input("IOI prompt", IOI_EXAMPLE, key="ioi_text",
                                   help="an IOI sentence (not the sidebar's prompt): two names, one repeated, "
                                        "ending where the other name should come")  # fmt: skip
        heads = [(c, h) for c in FLOW + [c for c in classes if c not in FLOW] for h in sorted(classes.get(c, []))]
        rows, tokens = [], []
        for _, (layer, head) in heads:
            patterns, tokens = state.layer_patterns(spec, ioi_prompt or IOI_EXAMPLE, layer)
            rows.append(patterns[head, -1])
        if rows:
            st.plotly_chart(attention_rows_figure(np.stack(rows), tokens, [f"{c} L{l}H{h}" for c, (l, h) in heads],
                                                  "Attention from the last token, head by head"), key="ioi_prompt")
            st.caption("Name movers should attend to the indirect object; S-inhibition heads to the repeated name.")
