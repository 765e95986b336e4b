"""Training runs view: a run folder (picked from the runs folder, newest first, or typed) with its
curves (loss, in-context-learning score, repeated-bigram gap, head scores against step) and its
phase-change window shaded, a phase-change comparison with other runs (e.g. attn-only-1l beside
attn-only-2l), one head pinned across checkpoints (its scores beside the best head's, its pattern
on a probe at each checkpoint), and a step slider showing that head's attention at a checkpoint.
Tokens are labelled readably everywhere (byte tokens as <0xE2>, spaces as ␣: readable_tokens)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps import state
from interp import WorkbenchError, dynamics, load
from interp.dynamics.pinned import HEAD_FORMS, N_PROBE, head_name, spread
from interp.train import list_checkpoints, read_metrics
from interp.train.folders import RUNS_ENV, find_training_runs, is_training_run
from interp.train.tokens import readable_tokens
from interp.viz.attention import attention_figure
from interp.viz.train import phase_change, pinned_head_figure, probe_grid, training_curves

MAX_PINNED = 16  # checkpoints scored for the pinned head (evenly spread, first and last kept)
MAX_GRID = 8  # checkpoints drawn in the probe grid


@st.cache_data(max_entries=256, show_spinner=False)
def checkpoint_summary(checkpoint: str, stamp: float) -> dynamics.CheckpointHeads:
    """Every head's scores and probe patterns at one checkpoint (`stamp`: its config's mtime, so a
    rewritten checkpoint is read again). The model is loaded for this alone and let go: scoring a
    run's checkpoints does not push the sidebar's models out of the model cache."""
    return dynamics.checkpoint_heads(load(checkpoint, device=state.DEVICE, dtype=state.DTYPE))


def summary(checkpoint: Path) -> dynamics.CheckpointHeads:
    config = checkpoint / "config.json"
    return checkpoint_summary(str(checkpoint), config.stat().st_mtime if config.is_file() else 0.0)


def pick_run() -> tuple[Path | None, list[str]]:
    """The run folder chosen (a typed folder wins over the picker) and every run the picker offers."""
    root = state.runs_root()
    found = {str(r.folder): r for r in find_training_runs(root) if state.allowed(r.folder)}
    c1, c2 = st.columns(2)
    choice = c1.selectbox("Run (newest first)", list(found), key="train_run",
                          format_func=lambda p: found[p].describe(root) if p in found else p,
                          help=f"The training runs under {state.public(str(root))}/, the folder `interp train "
                               f"--output_dir {state.public(str(root))}/NAME` writes to (set {RUNS_ENV} to read "
                               "another)") if found else None  # fmt: skip
    typed = c2.text_input("…or a run folder", key="train_dir", placeholder="e.g. runs/attn-only-2l").strip()
    if not (typed or choice):
        shown = state.public(str(root))
        st.info(f"No training runs under {shown}/ yet: train one with `interp train --preset attn-only-2l "
                f"--output_dir {shown}/attn-only-2l`, type a run folder, or set {RUNS_ENV} to the folder that holds "
                "your runs.")
        return None, list(found)
    folder = state.user_path(typed or choice, "run folder")
    if not folder.is_dir():
        raise WorkbenchError(f"run folder {typed or choice!r} does not exist; pick a folder written by `interp train`")
    if not is_training_run(folder):
        inside = [r for r in find_training_runs(folder) if state.allowed(r.folder)]
        if inside:
            names = ", ".join(str(r.folder.relative_to(folder)) for r in inside[:5]) + (", …" if len(inside) > 5 else "")
            raise WorkbenchError(f"{typed or choice!r} is a folder of runs, not a run: type one of them ({names})")
        raise WorkbenchError(f"{typed or choice!r} has neither metrics.jsonl nor checkpoint-* folders; is it a training "
                             "run? Type a folder written by `interp train --output_dir`")  # fmt: skip
    return folder, list(found)


def compare_phase_change(folder: Path, records: list[dict], others: list[str]) -> None:
    """This run beside others (ICL score, repeated-bigram gap, induction score), with this run's
    induction jump shaded and each metric's change across it, in every run (the controls)."""
    picked = st.multiselect("Compare with runs (phase change)", others, key="train_compare",
                            format_func=state.public,
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
        st.caption(dynamics.describe_window(evals[folder.name], folder.name) + " No phase change to line the runs up on.")
        return
    rows = dynamics.compare_across(evals, window)
    st.caption(f"{dynamics.describe_window(evals[folder.name], folder.name)} Each metric averaged over the "
               f"{rows[0]['span']} steps before and after it, in every run over the same steps; lower = more "
               "in-context learning.")
    st.dataframe([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "span"} for r in rows],
                 hide_index=True, key="train_compare_table")


def best_head_spans(rows: list[dict]) -> str:
    """'L1H3 (steps 10-400), L1H2 (800-3000)': which head was the best induction head when."""
    spans: list[list] = []
    for r in rows:
        if spans and spans[-1][0] == r["best induction head"]:
            spans[-1][2] = r["step"]
        else:
            spans.append([r["best induction head"], r["step"], r["step"]])
    return ", ".join(f"{h} ({a}-{b})" if a != b else f"{h} ({a})" for h, a, b in spans)


def pinned_head(checkpoints: list[Path], steps: list[int], window: tuple[int, int] | None) -> tuple[int, int]:
    """The head typed in the pin box (default: the best induction head at the last checkpoint),
    scored at up to MAX_PINNED checkpoints: a figure, a table and its pattern at each checkpoint."""
    scored = spread(steps, MAX_PINNED)
    bar, progress = state.progress_bar("Scoring every head at each checkpoint")
    summaries = {}
    for i, step in enumerate(scored):
        progress(i, len(scored), f"step {step}")
        summaries[step] = summary(checkpoints[steps.index(step)])
    bar.empty()
    last = summaries[scored[-1]]
    best = dynamics.best_head(last.scores["induction"])
    typed = st.text_input("Pin a head (layer and head)", key="train_pin",
                          placeholder=f"e.g. L1H3; empty: {head_name(best[:2])}, the best induction head at step {scored[-1]}",
                          help=f"Typed as {HEAD_FORMS}. Its scores are computed at each checkpoint on the trainer's "
                               "probe, so the curve follows this one head, not whichever is best.").strip()  # fmt: skip
    head = best[:2]
    if typed:
        try:
            head = dynamics.parse_head(typed, *last.shape)
        except WorkbenchError as e:  # the rest of the page stays, on the best head
            st.error(f"{state.public(str(e))}; showing {head_name(head)}, the best induction head, meanwhile")
    name = head_name(head)
    rows = dynamics.pinned_rows([(s, summaries[s].scores) for s in scored], head)
    st.plotly_chart(pinned_head_figure(rows, name, window), key="train_pinned_fig")
    note = f" ({len(scored)} of the run's {len(steps)} checkpoints, evenly spread)" if len(scored) < len(steps) else ""
    st.caption(f"{name}'s induction and previous-token scores at each checkpoint{note}, on the probe the trainer's "
               f"evaluations score heads on ({N_PROBE} sequences of BOS + random tokens + the same tokens again); "
               f"dotted: the best induction head's score, the log's curve at those steps, whichever head that is. "
               f"Best induction head: {best_head_spans(rows)}."
               + (" Shaded: the run's phase change (as in the curves above)." if window else ""))
    st.dataframe([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
                 hide_index=True, key="train_pinned_table")
    drawn = spread(scored, MAX_GRID)
    st.plotly_chart(probe_grid([(s, summaries[s].patterns[head]) for s in drawn], last.labels, name),
                    key="train_pinned_grid")
    return head


def at_step(checkpoints: list[Path], steps: list[int], head: tuple[int, int], prompt: str) -> None:
    """The step slider: the best and the pinned head's scores there, and the pinned head's pattern
    on the probe and on the prompt."""
    step = st.select_slider("Checkpoint step", steps, value=steps[-1], key="train_step") if len(steps) > 1 else steps[0]
    checkpoint = checkpoints[steps.index(step)]
    here = summary(checkpoint)
    layer, h, score = dynamics.best_head(here.scores["induction"])
    model = state.get_model(str(checkpoint))
    name = head_name(head)
    st.markdown(f"Step **{step}**: best induction head **L{layer}H{h}** (induction score {score:.3f}); pinned "
                f"**{name}**: induction {here.scores['induction'][head]:.3f}, previous-token "
                f"{here.scores['previous-token'][head]:.3f}; model {model.info.n_layers} layers × {model.info.n_heads} "
                f"heads, {'attention-only' if model.info.attn_only else 'with MLPs'}.")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(attention_figure(here.patterns[head], here.labels, f"{name} on repeated random tokens"),
                        key="train_probe")
    with right:
        patterns, _ = state.layer_patterns(str(checkpoint), prompt, head[0])
        labels = readable_tokens(model.tokenizer, model.to_tokens(prompt)[0])
        patterns, labels = state.drawable(patterns, labels)
        st.plotly_chart(attention_figure(patterns[head[1]], labels, f"{name} on the prompt"), key="train_prompt")
    st.caption("On the repeated sequence an induction head attends, from each token of the second copy, to the "
               "token that followed its first occurrence: a stripe parallel to the diagonal, one segment back. "
               "Tokens are shown by their bytes where a byte is no text on its own (<0xE2>), spaces as ␣.")


st.title("Training runs")
prompt = state.current_prompt()
with state.shows_errors():
    folder, runs = pick_run()
    if folder is not None:
        checkpoints = list_checkpoints(folder)
        records = read_metrics(folder) if (folder / "metrics.jsonl").is_file() else []
        window = dynamics.induction_window(records) if records else None
        if records:
            st.plotly_chart(training_curves(records, f"{folder.name}", window), key="train_curves")
            st.caption(dynamics.describe_window(records, folder.name))
            compare_phase_change(folder, records, [r for r in runs if Path(r).resolve() != folder])
        else:
            st.info("This run has no metrics.jsonl yet.")
        if checkpoints:
            steps = [int(p.name.rsplit("-", 1)[1]) for p in checkpoints]
            st.subheader("One head across checkpoints")
            head = pinned_head(checkpoints, steps, window)
            at_step(checkpoints, steps, head, prompt)
        else:
            st.info("This run has no checkpoint-* folders to inspect yet.")
