"""`interp circuit`: an edge circuit for any task, scored by the field's faithfulness curves.

    interp circuit --model smollm2-135m --task ioi --method eap-ig --out runs/circuit
    interp circuit --model gpt2 --task pairs.jsonl --method eap --n-prompts 50

Scores every edge of the model's graph on the task's scoring prompts (EAP-IG by default), measures
faithfulness on held-out prompts at MIB's circuit sizes (CPR, CMD, and f at 5 % of the edges with
a bootstrap interval) beside random circuits of the same sizes (MIB's Random row), patches some edges
exactly beside their estimates (the strongest, some drawn at random, some from the bottom half, with
the rank correlation over them), says whether the circuit is faithful and why (interp.circuits.verdict:
the rule with its numbers, recorded in edges.json too), and writes edges.json, MIB's edge file mib_edges.json (to score the
circuit with MIB's own evaluation code), curve.html, graph.html and exact.html into --out. --scores
reads the scores from a file instead (an edges.json, or MIB's edge file: MIB's own circuits measured
here).

Before any work it checks everything it can without a model (a task file's rows, the output
folder, the disk), and once the model is loaded it estimates the run's cost (interp.circuits.cost)
and refuses one above --max-minutes. The output folder is built beside --out and renamed into
place whole, so a kill or a rerun never leaves one run's files beside another's."""

from __future__ import annotations

import time
from pathlib import Path

from interp.circuits import methods
from interp.commands import helped

MAX_MINUTES = 60.0  # the default time budget of one run
OUTPUT_FILES = {
    "edges.json",
    "mib_edges.json",
    "curve.html",
    "graph.html",
    "exact.html",
    "plotly.min.js",
}  # what a run writes
MIN_OUTPUT_BYTES = 8 * 10**6  # plotly.min.js (4.8 MB) and the pages; edges.json is added once the graph is known


def add_parser(sub) -> None:
    p = sub.add_parser("circuit", help="edge circuit (EAP-IG/EAP/exact) for any task, with MIB faithfulness curves",
                       **helped("Score every edge for a task, then measure the circuit's faithfulness over MIB's "
                                "sizes on held-out prompts (CPR, CMD), beside random circuits.",
                                "interp circuit --model smollm2-135m --task ioi --out runs/ioi-edges",
                                "interp circuit --model smollm2-135m --task tasks.jsonl --method eap --exact-top 0"))  # fmt: skip
    p.add_argument("--model", required=True, help="model spec (see `interp models`), e.g. smollm2-135m or gpt2")
    p.add_argument("--task", required=True, help="ioi, greater-than, induction, or a .jsonl file of "
                   '{"clean", "corrupted", "answer", "distractor"} pairs')  # fmt: skip
    p.add_argument(
        "--method",
        default="eap-ig",
        help="a registered edge-scoring method: "
        + "; ".join(
            f"{m}{' (default)' if m == 'eap-ig' else ''}: {methods.get(m).help}" for m in methods.names()
        ).replace("%", "%%"),
    )
    p.add_argument("--steps", type=int, default=5, help="EAP-IG integration steps (default 5)")
    p.add_argument("--corruption", default=None, help="IOI only: s2-io (default; MIB's counterfactual, the second S "
                   "becomes IO), abc (Wang et al.'s: three other names) or new-s (both S become one new name)")  # fmt: skip
    p.add_argument("--metric", default=None, help="logit-diff, logit, prob, prob-diff, prob-diff-year, prob-diff-tens or kl "
                   "(default: the task's own; greater-than on a digit tokenizer: prob-diff-year, the whole year; "
                   "prob-diff-tens scores its tens digit alone)")  # fmt: skip
    p.add_argument(
        "--n-prompts", type=int, default=None, help="scoring prompts (default 32; a task file: half its rows)"
    )
    p.add_argument(
        "--n-heldout", type=int, default=None, help="held-out prompts for faithfulness (default: --n-prompts)"
    )
    p.add_argument("--ablation", default="counterfactual", help="counterfactual (default: the corrupted prompt's "
                   "activation) or mean")  # fmt: skip
    p.add_argument("--no-prune", action="store_true", help="keep the raw top-n edges (default: only those on a path "
                   "from the embedding to the logits)")  # fmt: skip
    p.add_argument(
        "--exact-top",
        type=int,
        default=20,
        help="edges to patch exactly beside their estimate: half the "
        "strongest, a quarter drawn at random from the rest, a quarter from the bottom half (default 20; 0: skip)",
    )
    p.add_argument(
        "--random-draws",
        type=int,
        default=3,
        help="random circuits per size beside the curve, MIB's Random row (default 3; 0: skip)",
    )
    p.add_argument(
        "--graph",
        default="grouped",
        help="grouped (default: ours, one k and one v input per KV head, the "
        "model as it computes) or mib (MIB's: q, k and v inputs per query head, GQA ungrouped; on a model "
        "without grouped queries both are the same graph); edges.json records which, with its counts",
    )
    p.add_argument(
        "--scoring-draws",
        type=int,
        default=1,
        help="score the circuit again on this many - 1 bootstrap "
        "resamples of the scoring prompts and give intervals over them and the held-out prompts together "
        "(default 1: intervals over the held-out prompts only)",
    )
    p.add_argument(
        "--scores",
        default=None,
        help="read the edge scores from a file instead of scoring: an edges.json "
        "of `interp circuit`, or MIB's edge file (its importances.json / our mib_edges.json)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=80,
        help="rows (prompts x EAP-IG steps) per forward+backward of the attribution (default 80)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the prompts and the bootstrap (default 0)")
    p.add_argument("--out", default="runs/circuit", help="output folder (default runs/circuit), replaced whole")
    p.add_argument("--max-minutes", type=float, default=MAX_MINUTES, help="refuse a run estimated to take longer "
                   f"(default {MAX_MINUTES:g}; the estimate is printed before the work starts)")  # fmt: skip
    p.add_argument("--device", default=None, help="cpu, cuda, auto (default auto)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: float32 on CPU)")
    p.set_defaults(func=run)


def _check_before_loading(args) -> None:
    """Everything that needs no model: settings, the task (a file's rows), the output folder and its disk."""
    from interp.circuits.report import check_settings
    from interp.circuits.ungroup import check_graph
    from interp.data.ioi import check_corruption
    from interp.data.tasks import BUILTIN, DEFAULT_PROMPTS, METRICS, MIN_HELDOUT, read_rows
    from interp.errors import WorkbenchError
    from interp.io import check_dir_target, check_free_space, check_replaceable

    if args.batch_size < 1:
        raise WorkbenchError(f"--batch-size must be at least 1 (got {args.batch_size})")
    check_graph(args.graph)
    check_settings(args.method, args.steps, args.ablation, args.exact_top, args.batch_size, args.random_draws,
                   args.scoring_draws, from_file=args.scores is not None)  # fmt: skip
    if args.scores is not None and not Path(args.scores).is_file():
        raise WorkbenchError(f"--scores {args.scores}: no such file; pass an edges.json or a MIB edge file")
    if args.metric is not None and args.metric not in METRICS:
        raise WorkbenchError(f"unknown metric {args.metric!r}; use --metric with one of {', '.join(METRICS)}")
    if args.task not in BUILTIN and not args.task.endswith(".jsonl") and not Path(args.task).is_file():
        raise WorkbenchError(
            f"unknown task {args.task!r}; use --task {', --task '.join(BUILTIN)} or a .jsonl file of pairs"
        )
    if args.corruption is not None and args.task != "ioi":
        raise WorkbenchError(
            f"--corruption is an IOI option; task {args.task!r} brings its own corrupted prompts: drop --corruption"
        )
    if args.corruption is not None:
        check_corruption(args.corruption)
    if not args.max_minutes > 0:
        raise WorkbenchError(f"--max-minutes must be a positive number of minutes (got {args.max_minutes})")
    if args.task in BUILTIN:
        for flag, n in (("--n-prompts", args.n_prompts), ("--n-heldout", args.n_heldout)):
            if n is not None and n < 1:
                raise WorkbenchError(f"{flag} must be at least 1 (got {n})")
        held = args.n_heldout or args.n_prompts or DEFAULT_PROMPTS
        if held < MIN_HELDOUT:
            raise WorkbenchError(
                f"{held} held-out prompt(s) give no 95% interval; use --n-heldout {MIN_HELDOUT} or more"
            )
    else:
        read_rows(args.task, args.n_prompts, args.n_heldout, MIN_HELDOUT)
    out = check_dir_target(args.out, "--out")
    check_replaceable(out, OUTPUT_FILES, "--out")
    check_free_space(out, MIN_OUTPUT_BYTES, "--out")


def _find(args):
    """Load, build the task, estimate and check the cost, find the circuit and write --out whole,
    under one progress bar that runs from the first second."""
    from interp.circuits import cost
    from interp.circuits.faithfulness import MIB_PERCENTS
    from interp.circuits.report import HEADLINE, find_circuit, write_circuit
    from interp.circuits.types import Graph
    from interp.circuits.ungroup import GRAPH_HELP, ungrouped
    from interp.data.tasks import load_task
    from interp.io import check_free_space, write_dir
    from interp.models.load import load

    live = _LiveBar("circuit")
    try:
        live.stage(f"loading {args.model}")
        model = load(args.model, device=args.device, dtype=args.dtype)
        if args.graph == "mib" and model.info.n_kv_heads != model.info.n_heads:
            live.stage("ungrouping the keys and values (MIB's graph)")
            model = ungrouped(model)
        live.stage(f"building the task {args.task}")
        split = load_task(args.task, model, args.n_prompts, args.n_heldout, args.seed, args.metric, args.corruption)
        graph = Graph.of(model)
        gqa = (
            f"; k/v inputs belong to the {model.info.n_kv_heads} KV heads of a layer"
            if graph.n_kv != graph.n_heads
            else ""
        )
        live.write(f"{model.info.name}, {args.graph} graph ({GRAPH_HELP[args.graph]}): {graph.n_nodes:,} nodes, "
                   f"{graph.n_edges:,} edges ({len(graph.readers):,} inputs{gqa})")  # fmt: skip
        corr = f", corruption {split.score.corruption}" if split.score.corruption else ""
        live.write(f"task {split.name}: {len(split.score)} scoring prompts, {len(split.heldout)} held out, "
                   f"metric {split.score.metric}{corr}")  # fmt: skip
        check_free_space(args.out, MIN_OUTPUT_BYTES + 240 * graph.n_edges, "--out")  # edges.json and mib_edges.json
        live.stage("estimating the cost (one timed forward)")
        scores = None
        if args.scores is not None:
            live.stage(f"reading the scores in {args.scores}")
            scores = _read_scores(args.scores, graph)
            live.write(f"scores from {args.scores}: {scores.method} on {scores.task}")
        c = cost.estimate(model, split, args.method, args.steps, args.exact_top, args.batch_size,
                          len({*MIB_PERCENTS, HEADLINE}), graph, args.random_draws)  # fmt: skip
        if scores is not None:
            c.stages.pop("scores")
        elif args.scoring_draws > 1:  # each draw scores again and runs the |score| curve's sizes once more
            n_sizes = len({*MIB_PERCENTS, HEADLINE})
            c.stages["scoring draws"] = (args.scoring_draws - 1) * (c.stages["scores"] + len(split.heldout) * n_sizes)
        live.write(f"estimated: about {cost.duration(c.seconds)} ({c.summary()}); budget {args.max_minutes:g} min")
        cost.check(c, args.max_minutes, f"pass --max-minutes {max(1, round(c.seconds / 60 * 1.5))} to run it")
        report = find_circuit(model, split, args.method, args.steps, args.ablation, not args.no_prune, args.exact_top,
                              args.batch_size, seed=args.seed, progress=live.progress, random_draws=args.random_draws,
                              scores=scores, scoring_draws=args.scoring_draws, graph_name=args.graph)  # fmt: skip
        live.stage("writing")
        folder = write_dir(args.out, lambda tmp: write_circuit(report, tmp, d_model=model.info.d_model))
    finally:
        live.close()  # the bar ends before any error line
    return report, sorted(p for p in folder.iterdir() if p.is_file())


def _read_scores(path: str, graph):
    """An edges.json of `interp circuit`, or MIB's edge file (told apart by MIB's cfg key)."""
    import json

    from interp.circuits.io import read_edges
    from interp.circuits.mib import from_mib, read_mib
    from interp.errors import WorkbenchError

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"cannot read --scores {path}: {e}") from None
    if isinstance(data, dict) and "cfg" in data:
        from_mib(data, graph, path)  # refuses a file for another model before anything runs
        return read_mib(path, graph)
    return read_edges(path, graph)[0]


def run(args) -> int:
    from interp.circuits.report import HEADLINE
    from interp.circuits.verdict import circuit_verdict
    from interp.io import remove_temporaries, writer_lock

    _check_before_loading(args)  # bad input fails before the model loads
    start = time.time()
    out = Path(args.out).expanduser().absolute()
    with writer_lock(out, "--out"):  # a second run into the same --out is refused, not interleaved
        remove_temporaries(out.parent, out.name)  # what a killed run left beside --out
        report, written = _find(args)
    s, c = report.scores, report.curve
    how = f"{s.method}" + (f" ({s.steps} steps)" if s.steps else "")
    print(f"{how}: clean metric {s.clean_metric:.3f}, corrupted {s.corrupted_metric:.3f} (scoring prompts)")
    print("strongest edges:  " + "   ".join(f"{a}->{b} {v:+.3f}" for a, b, v in s.top(5)))
    print(f"faithfulness on {c.n_heldout} held-out prompts, {report.graph_name} graph ({s.graph.n_edges:,} edges; "
          f"{c.ablation} ablation, {'pruned ' if c.pruned else ''}top-n by |score|; m(full) {c.m_full:.3f}, "
          f"m(empty) {c.m_empty:.3f}):")  # fmt: skip
    print(f"{'% edges':>8}{'edges':>9}{'f':>8}  95% interval    {'f (signed ranking)':>18}")
    for i, p in enumerate(c.percents):
        sg = report.curve_signed
        print(
            f"{p:>8g}{c.n_edges[i]:>9,}{c.faithfulness[i]:>8.3f}  [{c.lo[i]:6.3f}, {c.hi[i]:6.3f}]  {sg.faithfulness[i]:>18.3f}"
        )
    print(f"CPR {report.cpr:.3f} [{report.curve_signed.cpr_ci[0]:.3f}, {report.curve_signed.cpr_ci[1]:.3f}] (signed ranking)   "
          f"CMD {report.cmd:.3f} [{c.cmd_ci[0]:.3f}, {c.cmd_ci[1]:.3f}] (|score| ranking)")  # fmt: skip
    f, lo, hi = report.headline()
    fs, los, his = report.curve_signed.at(HEADLINE)
    print(f"held-out faithfulness at {HEADLINE:g}% of edges: {f:.3f} (95% interval {lo:.3f} to {hi:.3f}) by |score|; "
          f"{fs:.3f} ({los:.3f} to {his:.3f}) by signed score")  # fmt: skip
    if report.pooled is not None:
        pf, plo, phi = report.pooled.at(c.percents.index(HEADLINE))
        print(f"with the scoring prompts resampled too ({report.pooled.n_draws} scoring draws, interp.circuits.draws): "
              f"f at {HEADLINE:g}% {pf:.3f} (95% interval {plo:.3f} to {phi:.3f})")  # fmt: skip
    else:
        print("(intervals resample the held-out prompts only; --scoring-draws 5 resamples the scoring prompts too)")
    if report.random is not None:
        r = report.random
        rf, rcpr, rcmd = r.at(HEADLINE), r.area("cpr"), r.area("cmd")
        print(f"random circuits ({r.draws} draws, same sizes and pruning; mean, min to max over draws): f at {HEADLINE:g}% "
              f"{rf.value:.3f} ({rf.lo:.3f} to {rf.hi:.3f}), CPR {rcpr.value:.3f} ({rcpr.lo:.3f} to {rcpr.hi:.3f}), "
              f"CMD {rcmd.value:.3f} ({rcmd.lo:.3f} to {rcmd.hi:.3f})")  # fmt: skip
    v = circuit_verdict(report, HEADLINE)
    print(f"verdict: {v.line()}")
    print(f"  rule: {v.rule} (recorded in edges.json)")
    if report.exact:
        agree = report.exact_summary
        n = agree["groups"]
        w = agree["largest_gap"]
        print(f"exact check of {agree['n']} edges ({n['top']} strongest, {n['random']} at random, {n['bottom']} from the "
              f"bottom half): Spearman {agree['spearman']:.3f}, Pearson {agree['pearson']:.3f}; largest gap "
              f"{w['src']}->{w['dst']} ({w['group']}) estimate {w['estimate']:+.3f} vs exact {w['exact']:+.3f}")  # fmt: skip
    print(f"wrote {len(written)} files to {args.out} in {time.time() - start:.1f}s")
    return 0


class _LiveBar:
    """The run's one progress bar, redrawn every second from its own thread so the current stage
    and the clock show even while one long step (a model load, a long forward) runs."""

    def __init__(self, desc: str):
        import threading

        from interp.commands import step_bar

        self.bar, self._progress = step_bar(desc)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.bar.refresh()

    def stage(self, message: str) -> None:
        self._progress(0, 1, message)

    def progress(self, done: int, total: int, message: str) -> None:
        self._progress(done, total, message)

    def write(self, line: str) -> None:
        self.bar.write(line)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.bar.close()
