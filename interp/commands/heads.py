"""`interp heads`: find previous-token, duplicate-token and induction heads, optionally check
each causally (mean- and zero-ablation), and print a table, json or csv; --plot writes a
layer x head heatmap per kind."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from interp.commands import helped
from interp.errors import WorkbenchError

FIELDS = ["kind", "layer", "head", "score", "copying", "ov_copying", "causal_effect", "causal_effect_lo",
          "causal_effect_hi", "zero_effect", "zero_effect_lo", "zero_effect_hi", "induction_drop", "flagged", "confirmed", "verdict", "why"]
WIDTH = 99  # the table's lines, the reasons below it wrapped to this width


def add_parser(sub) -> None:
    p = sub.add_parser("heads", help="find previous-token, duplicate-token and induction heads (with causal checks)",
                       **helped("Score every head for previous-token, duplicate-token and induction patterns, report "
                                "the top ones, and (--validate) check each by ablation.",
                                "interp heads --model smollm2-135m --kind induction --validate",
                                "interp heads --model gpt2 --text 'a b c a b c' --format json --out heads.json"))  # fmt: skip
    p.add_argument("--model", required=True, help="model spec (see `interp models`)")
    p.add_argument("--kind", action="append", default=None,
                   help="previous-token, duplicate-token, induction; comma-separated or repeated (default: all)")
    p.add_argument("--top", type=int, default=5, help="heads reported per kind (default 5)")
    p.add_argument("--text", default=None, help="score on this text file (one sequence) instead of repeated random tokens")
    p.add_argument("--validate", action="store_true", help="causal check: ablate each reported head, measure repeated-half loss")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--out", default=None, help="write the result here instead of stdout")
    p.add_argument("--plot", default=None, help="write a layer x head heatmap per kind to this .html file")
    p.add_argument("--seqs", type=int, default=16, help="repeated-token probe sequences (default 16)")
    p.add_argument("--seg-len", type=int, default=50, help="tokens per repeated segment (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--measure", "--error-measure", dest="measure", default="target", help="pattern score: target (default; Olsson et al.'s prefix matching: mean attention "
                   "on the target over the rows that have one, the same scale for every kind) or TL detect_head's "
                   "tl-mul / tl-abs (mul / abs)")
    p.add_argument("--min-score", type=float, default=None,
                   help="pattern score a confirmed head needs (default 0.5: half its attention on the target)")
    p.add_argument("--exclude-bos", action="store_true", help="ignore attention to BOS (as TL detect_head)")
    p.add_argument("--exclude-current-token", action="store_true", help="ignore attention to the current token")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.set_defaults(func=run)


def parse_kinds(values: list[str] | None) -> tuple[str, ...]:
    from interp.heads import KINDS
    from interp.heads.detect import check_kinds

    if not values:
        return KINDS
    kinds = [k.strip() for v in values for k in v.split(",") if k.strip()]
    return check_kinds(dict.fromkeys(kinds))


def read_text(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise WorkbenchError(f"cannot read --text {path!r} ({type(e).__name__}: {e}); give a UTF-8 text file") from e
    if not text.strip():
        raise WorkbenchError(f"--text {path!r} is empty; give a file with some text in it")
    return text


def render(report, fmt: str) -> str:
    """The report as json (measure, sample sizes and the findings), csv (one row per finding;
    the measure in a column) or a table with a legend."""
    rows = [{**f.to_dict(), "measure": report.measure} for f in report.findings]
    if fmt == "json":
        meta = {"measure": report.measure, "measure_means": report.describe_measure(), "target_rows": report.target_rows,
                "n_tokens": report.n_tokens, "ov_tokens": report.ov_tokens, "validate_seqs": report.validate_seqs}
        return json.dumps({**meta, "heads": [f.to_dict() for f in report.findings]}, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        fields = [c for c in FIELDS if any(c in r for r in rows)] + ["measure"]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    return table(report)


def table(report) -> str:
    findings = report.findings
    validated = any(f.causal_effect is not None for f in findings)
    head = f"{'kind':<16} {'head':>7} {'score':>6} {'copy z':>6} {'OV':>5}"
    if validated:
        head += f" {'Δloss mean [95%]':>21} {'Δloss zero':>10} {'Δind':>6} verdict"
    lines = [head, "-" * len(head)]
    for f in findings:
        line = (f"{f.kind:<16} {f'L{f.layer}H{f.head}':>7} {f.score:>6.3f} {'' if f.copying is None else f'{f.copying:.2f}':>6}"
                f" {'' if f.ov_copying is None else f'{f.ov_copying:.2f}':>5}")
        if validated:
            verdict = f.verdict or "-"
            drop = "" if f.induction_drop is None else f"{-f.induction_drop:+.3f}"
            effect = f"{f.causal_effect:+.3f} [{f.causal_effect_lo:+.2f},{f.causal_effect_hi:+.2f}]"
            line += f" {effect:>21} {f.zero_effect:>+10.3f} {drop:>6} {verdict}"
        lines.append(line)
    lines.append(f"{report.describe_measure()}; rows with a target: "
                 + ", ".join(f"{k} {n}" for k, n in report.target_rows.items()))
    if any(f.copying is not None for f in findings):
        lines.append("copy z: direct-logit lift of the attended token (std devs; what confirms a head); "
                     f"OV: eigenvalue score sum(l)/sum(|l|) of the OV circuit on {report.ov_tokens} sampled tokens")
    if validated:
        lines += why_lines(findings)
        lines.append(f"Δloss: change of the repeated-half loss (nats) when the head is ablated (mean, with its 95% "
                     f"bootstrap interval over {report.validate_seqs} probe sequences / zero); Δind: change of later "
                     "induction heads' score when a previous-token head is mean-ablated")
    return "\n".join(lines) + "\n"


def why_lines(findings) -> list[str]:
    """Each verdict's reason, one head per paragraph, wrapped to WIDTH."""
    import textwrap

    lines = ["why:"]
    for f in findings:
        if f.verdict is not None:
            lines += textwrap.wrap(f"L{f.layer}H{f.head} {f.kind}: {f.verdict}: {f.why}", WIDTH,
                                   initial_indent="  ", subsequent_indent="      ")
    return lines


def run(args) -> int:
    from tqdm import tqdm

    from interp import load
    from interp.heads import FindConfig, heads_report
    from interp.io import check_file_target, write_text

    kinds = parse_kinds(args.kind)  # bad input fails before the model loads
    extra = {} if args.min_score is None else {"min_score": args.min_score}
    config = FindConfig(n_seqs=args.seqs, seg_len=args.seg_len, seed=args.seed, measure=args.measure,
                        exclude_bos=args.exclude_bos, exclude_current_token=args.exclude_current_token,
                        **extra).validate(args.top)
    if args.plot and not args.plot.endswith(".html"):
        raise WorkbenchError(f"--plot {args.plot!r} must be an .html file")
    text = read_text(args.text) if args.text else None
    for path, what in ((args.out, "--out"), (args.plot, "--plot")):
        if path:
            check_file_target(path, what)  # before the model loads and the work starts
    model = load(args.model, device=args.device)
    bars: dict[str, tqdm] = {}

    def progress(done: int, total: int, message: str) -> None:
        bar = bars.get(message)
        if bar is None:
            bar = bars[message] = tqdm(total=total, desc=message, leave=False)
        bar.n = done
        bar.refresh()

    report = heads_report(model, kinds, args.top, text=text, validate=args.validate, progress=progress, config=config)
    for bar in bars.values():
        bar.close()
    out = render(report, args.format)
    if args.out:
        write_text(args.out, out)
    else:
        print(out, end="")
    if args.plot:
        from interp.viz.heads import score_heatmaps
        from interp.viz.html import write_figure

        source = "text" if text is not None else f"{args.seqs} repeated-token sequences of 2x{args.seg_len}"
        fig = score_heatmaps(report.scores, report.findings, measure=report.measure,
                             title=f"{model.info.name}: head scores ({report.measure}) on {source}")
        write_figure(fig, args.plot)
    return 0
