"""`interp ioi`: find the Indirect Object Identification circuit in a model and measure it.

    interp ioi --model smollm2-135m --n-prompts 48 --seed 0 --out runs/ioi

writes circuit.json, path-patching heatmaps and the circuit graph (HTML) into --out and prints
a table of the classes found with the held-out faithfulness (each class kept at its positions, or with
--position-threshold each head also at the segments where discovery found it working, then the class
figure beside it; and at every position), completeness and minimality, each with its 95% bootstrap interval over
the held-out prompts, which come from templates and names discovery never saw, each followed by its
verdict (faithful, complete, minimal or not) with the rule and the numbers that decided it
(interp.circuits.verdict; every head failing minimality is named with its interval). --out is built
beside and renamed into place whole (a rerun or a kill never mixes two runs' files)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from interp.commands import helped
from interp.errors import WorkbenchError


def add_parser(sub) -> None:
    p = sub.add_parser("ioi", help="find the IOI circuit by path patching and measure its faithfulness",
                       **helped("Find the indirect-object-identification circuit's head classes by path patching "
                                "(Wang et al. 2022) and measure its faithfulness on held-out prompts.",
                                "interp ioi --model smollm2-135m --out runs/ioi",
                                "interp ioi --model gpt2 --corruption abc --n-prompts 32 --no-checks"))  # fmt: skip
    p.add_argument("--model", required=True, help="model spec (see `interp models`), e.g. smollm2-135m or gpt2")
    p.add_argument("--n-prompts", type=int, default=None, help="prompts for discovery (default 48, chosen on "
                   "validation: see RESULTS.md)")
    p.add_argument("--n-heldout", type=int, default=None, help="held-out prompts for evaluation (default: --n-prompts)")
    p.add_argument("--seed", type=int, default=0, help="seed for the prompts (default 0)")
    p.add_argument("--out", default="runs/ioi", help="output folder (default runs/ioi)")
    p.add_argument("--device", default=None, help="cpu, cuda, auto (default auto)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: float32 on CPU)")
    p.add_argument("--no-checks", action="store_true", help="skip the completeness and minimality checks")
    p.add_argument("--corruption", default="abc", help="path patching's counterfactual: abc (Wang et al.), s2-io "
                   "(MIB's) or new-s (default abc; evaluation mean-ablates with ABC means either way)")
    p.add_argument("--threshold", type=float, default=None, help="share of a step's largest path effect a head "
                   "needs to be admitted, in (0, 1] (default: the value chosen on validation, see RESULTS.md)")
    p.add_argument("--paths", default=None,
                   help="paths to several receivers: joint patches them all at once (Wang et al.), each also patches "
                   "each receiver alone and keeps a sender's strongest effect, at one more run per receiver (default "
                   "joint; each was compared on validation and not chosen, see RESULTS.md)")
    p.add_argument("--named-at-floor", default=None, action=argparse.BooleanOptionalAction,
                   help="at the logits step, admit a head whose attention names a direct class (name mover, negative "
                   "name mover, S suppression) once its effect reaches the floor, without the share (default: on, "
                   "chosen on validation, see RESULTS.md; --no-named-at-floor: the share for every head, as before "
                   "2026-12-08)")
    p.add_argument("--max-heads", type=int, default=None, help="keep at most this many heads, the first admitted")
    p.add_argument("--position-threshold", default=None, help="keep each circuit head also at the segments where "
                   "keeping it raises F(C) by this share of F(M) on the discovery prompts, in (0, 1], or 'none' for "
                   "its class's position only (default: the value chosen on validation, see RESULTS.md)")
    p.add_argument("--n-abc", type=int, default=64,
                   help="ABC prompts per template behind the mean-ablation values (default 64)")
    p.set_defaults(func=run)


OUTPUT_FILES = {"circuit.json", "circuit.html", "faithfulness_curve.html", "path_*.html", "plotly.min.js"}  # what a run writes


def run(args) -> int:
    from interp.circuits.discover import N_DISCOVERY, DiscoveryConfig
    from interp.circuits.pipeline import check_sizes
    from interp.data.ioi import check_corruption
    from interp.io import check_dir_target, check_replaceable, writer_lock

    args.n_prompts = N_DISCOVERY if args.n_prompts is None else args.n_prompts
    check_sizes(args.n_prompts, args.n_heldout)  # bad input fails before the model loads
    check_corruption(args.corruption)
    places = {} if args.position_threshold is None else {"position_threshold": _position_threshold(args.position_threshold)}
    chosen = {"threshold": args.threshold, "paths": args.paths, "named_at_floor": args.named_at_floor}
    given = {k: v for k, v in chosen.items() if v is not None}
    args.config = DiscoveryConfig(**given, max_heads=args.max_heads, **places)
    if args.n_abc < 1:
        raise WorkbenchError(f"--n-abc must be at least 1 (got {args.n_abc})")
    check_dir_target(args.out, "--out")
    check_replaceable(args.out, OUTPUT_FILES, "--out")
    with writer_lock(args.out, "--out"):  # a second run into the same --out is refused, not interleaved
        return _run(args)


def _position_threshold(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise WorkbenchError(f"--position-threshold takes a number in (0, 1] or 'none' (got {text!r})") from None


def _run(args) -> int:
    from interp.circuits.pipeline import run_ioi, write_report
    from interp.circuits.verdict import head_minimality, ioi_verdicts
    from interp.commands import step_bar
    from interp.io import remove_temporaries, write_dir
    from interp.models.load import load

    out = Path(args.out).expanduser()
    remove_temporaries(out.absolute().parent, out.name)  # what a killed run left beside --out
    start = time.time()
    model = load(args.model, device=args.device, dtype=args.dtype)
    bar, progress = step_bar("ioi")

    try:
        report = run_ioi(model, args.n_prompts, args.seed, args.n_heldout, config=args.config,
                         checks=not args.no_checks, n_abc=args.n_abc, progress=progress, corruption=args.corruption)
    finally:
        bar.close()
    folder = write_dir(out, lambda tmp: write_report(report, tmp, model.info.n_layers, model.info.n_heads))
    written = [p for p in folder.iterdir() if p.is_file()]
    j = report.to_json()
    e = report.evaluation
    print(f"IOI circuit in {report.model}  (discovery on {report.n_prompts} prompts; evaluated on {report.n_heldout} "
          f"held-out prompts from {len(e.templates)} other templates and {len(e.names)} other names)")
    print(f"{'class':<22}{'heads':>6}  {'kept at':<8} heads (layer.head)")
    for c, heads in j["classes"].items():
        print(f"{c:<22}{len(heads):>6}  {j['class_positions'][c]:<8} {' '.join(f'{a}.{b}' for a, b in heads)}")
    print(f"clean logit diff {j['clean_logit_diff']:.3f}   corrupted ({report.corruption}) {j['corrupted_logit_diff']:.3f}"
          f"  (discovery prompts; {report.discovery.config.rule()})")
    print(f"held out [95% interval]: model F(M) {e.model_logit_diff:.3f}   circuit F(C) {e.circuit_logit_diff:.3f}")
    verdicts = ioi_verdicts(j)
    where = "each class at its positions" if e.places is None else "each head at its places"
    print(f"faithfulness F(C)/F(M) {e.faithfulness:.3f} ({where}; {e.n_abc} ABC prompts per template for the means); "
          f"every circuit head at every position {e.faithfulness_all_positions:.3f}")
    if e.places is not None:
        added = {h: [s for s in v if s != j["class_positions"][c]] for c, hs in j["classes"].items()
                 for h, v in e.places.items() if [int(x) for x in h.split(".")] in hs}  # fmt: skip
        print(f"places (position threshold {report.discovery.config.position_threshold} of F(M) on the discovery "
              f"prompts): {sum(map(len, added.values()))} segments added to {sum(1 for v in added.values() if v)} heads; "
              f"at the classes' positions alone {e.faithfulness_class_positions:.3f}")
        for h, v in added.items():
            if v:
                print(f"    {h:<6} also at {', '.join(v)}")
    _print_verdict(verdicts["faithfulness"])
    if e.curve:
        marks = [p for p in e.curve if p["k"] in {1, 2, 5, 10, 20, 30, 40, 54} or p["k"] == len(e.curve)]
        print("faithfulness of the first k heads: " + "  ".join(f"{p['k']}: {p['value']:.2f}" for p in marks))
    if e.incompleteness is not None:
        passed = sum(m["passes"] for m in e.minimality.values())
        greedy = next((c for c in e.completeness if c["removed"] == "greedy"), None)
        print(f"incompleteness {e.incompleteness:.3f} (worst K; greedy K "
              f"{' '.join(f'{a}.{b}' for a, b in greedy['heads']) if greedy else 'not searched'})")
        _print_verdict(verdicts["completeness"])
        print(f"minimality: {passed} of {len(e.minimality)} heads change F(C) by at least {e.min_minimality:.0%} (lower "
              f"end of their interval); noise (a head outside the circuit) {e.noise.get('mean', float('nan')):.3f} "
              f"mean, {e.noise.get('max', float('nan')):.3f} max")  # fmt: skip
        if "minimality" in verdicts:
            _print_verdict(verdicts["minimality"])
        failing = [(h, row) for h, row in e.minimality.items() if not row["passes"]]
        if failing:
            print("  each head that fails, why:")
        for head, row in failing:
            print(f"    {head:<7} {head_minimality(row, e.min_minimality)}")
    print(f"wrote {len(written)} files to {args.out} in {time.time() - start:.1f}s")
    return 0


def _print_verdict(v) -> None:
    """A verdict under the figure it judges: the word and why, then its rule (interp.circuits.verdict)."""
    print(f"  verdict: {v.line()}")
    print(f"  rule: {v.rule}")
