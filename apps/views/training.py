"""Training runs view: a run folder's curves (loss, in-context-learning score, repeated-bigram gap,
head scores against step), a phase-change comparison with other runs (e.g. attn-only-1l beside
attn-only-2l), and a step slider showing the best induction head's attention at that checkpoint."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps import state
from interp import WorkbenchError, dynamics
from interp.train import list_checkpoints, read_metrics
from interp.viz.attention import attention_figure
from interp.viz.train import phase_change, training_curves


@st.cache_data(max_entries=64, show_spinner=False)
def best_induction_head(checkpoint: str) -> tuple[int, int, float]:
    """(layer, head, score) of the checkpoint's best induction head, cached per checkpoint."""
    model = state.get_model(checkpoint)
    with state.model_lock("induction scores"):
        return dynamics.best_induction_head(model)


def compare_phase_change(folder: Path, records: list[dict], others: list[str]) -> None:
    """This run beside others (ICL score, repeated-bigram gap, induction score), with this run's
    induction jump shaded and each metric's change across it, in every run (the controls)."""
    picked = st.multiselect("Compare with runs (phase change)", others, key="train_compare",
                            help="e.g. attn-only-1l beside attn-only-2l: Olsson et al.'s comparison")
    typed = st.text_input("…or run folders, comma-separated", key="train_compare_dirs").strip()
    picked = picked + [str(state.user_path(t.strip(), "run folder")) for t in typed.split(",") if t.strip()]
    if not picked:
        return
    evals = {folder.name: [r for r in records if "induction_score" in r]}
    for other in picked:
        path = Path(other).expanduser()
        if not (path / "metrics.jsonl").is_file():
            raise WorkbenchError(f"{other!r} has no metrics.jsonl; pick a run folder written by `interp train`")
        evals[path.name if path.name not in evals else str(path)] = [r for r in read_metrics(path) if "induction_score" in r]
    window = dynamics.induction_window(evals[folder.name])
    st.plotly_chart(phase_change(evals, window=window, title=f"{folder.name} beside {', '.join(list(evals)[1:])}"),
                    key="train_compare_fig")
    if window is None:
        st.caption(f"{folder.name}'s best induction score never reaches {dynamics.INDUCTION_FORMED}: "
                   "no phase change to line the runs up on.")
        return
    rows = dynamics.compare_across(evals, window)
    st.caption(f"Shaded: steps {window[0]}-{window[1]}, where {folder.name}'s best induction score rises from 10% "
               f"to 90% of its change. Each metric averaged over the {rows[0]['span']} steps before and after it, "
               "in every run over the same steps; lower = more in-context learning.")
    st.dataframe([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "span"} for r in rows],
                 hide_index=True, key="train_compare_table")


st.title("Training runs")
spec, prompt = state.current_spec(), state.current_prompt()
with state.shows_errors():
    runs = state.discover_runs()
    c1, c2 = st.columns(2)
    choice = c1.selectbox("Run", runs, key="train_run") if runs else None
    typed = c2.text_input("…or a run folder", key="train_dir", placeholder="e.g. runs/attn-only-2l").strip()
    run = str(state.user_path(typed or choice, "run folder")) if typed or choice else None
    if not run:
        st.info(f"No training runs under {state.public(str(state.runs_root()))}/ yet: train one with `interp train --output-dir runs/NAME`, "
                "or type a run folder.")
    else:
        folder = Path(run).expanduser()
        if not folder.is_dir():
            raise WorkbenchError(f"run folder {run!r} does not exist; pick a folder written by `interp train`")
        checkpoints = list_checkpoints(folder)
        records = read_metrics(folder) if (folder / "metrics.jsonl").is_file() else []
        if not records and not checkpoints:
            raise WorkbenchError(f"{run!r} has neither metrics.jsonl nor checkpoint-* folders; is it a training run?")
        if records:
            st.plotly_chart(training_curves(records, f"{folder.name}"), key="train_curves")
            compare_phase_change(folder, records, [r for r in runs if Path(r) != folder])
        else:
            st.info("This run has no metrics.jsonl yet.")
        if checkpoints:
            steps = [int(p.name.rsplit("-", 1)[1]) for p in checkpoints]
            step = st.select_slider("Checkpoint step", steps, value=steps[-1], key="train_step") if len(steps) > 1 else steps[0]
            checkpoint = str(checkpoints[steps.index(step)])
            model = state.get_model(checkpoint)
            layer, head, score = best_induction_head(checkpoint)
            st.markdown(f"Step **{step}**: best induction head **L{layer}H{head}** (induction score {score:.3f}); "
                        f"model {model.info.n_layers} layers × {model.info.n_heads} heads, "
                        f"{'attention-only' if model.info.attn_only else 'with MLPs'}.")
            left, right = st.columns(2)
            with left:
                patterns, tokens = state.probe_patterns(checkpoint, layer, seg_len=12)
                st.plotly_chart(attention_figure(patterns[head], tokens, f"L{layer}H{head} on repeated random tokens"),
                                key="train_probe")
            with right:
                patterns, tokens = state.drawable(*state.layer_patterns(checkpoint, prompt, layer))
                st.plotly_chart(attention_figure(patterns[head], tokens, f"L{layer}H{head} on the prompt"), key="train_prompt")
            st.caption("On the repeated sequence an induction head attends, from each token of the second copy, to the "
                       "token that followed its first occurrence: a stripe parallel to the diagonal, one segment back.")
        else:
            st.info("This run has no checkpoint-* folders to inspect yet.")
