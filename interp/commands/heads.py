"""`interp heads`: find previous-token, duplicate-token and induction heads, optionally check
each causally (mean- and zero-ablation), and print a table, json or csv; --plot writes a
layer x head heatmap per kind."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from interp.errors import WorkbenchError

FIELDS = ["kind", "layer", "head", "score", "copying", "causal_effect", "zero_effect", "induction_drop", "flagged",
          "confirmed"]


def add_parser(sub) -> None:
    p = sub.add_parser("heads", help="find previous-token, duplicate-token and induction heads (with causal checks)")
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
    p.add_argument("--error-measure", choices=["mul", "abs"], default="mul", help="as TL detect_head (default mul)")
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


def render(findings, fmt: str) -> str:
    rows = [f.to_dict() for f in findings]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[c for c in FIELDS if any(c in r for r in rows)], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    return table(findings)


def table(findings) -> str:
    validated = any(f.causal_effect is not None for f in findings)
    head = f"{'kind':<16} {'head':>7} {'score':>7} {'copying':>8}"
    if validated:
        head += f" {'Δloss mean':>10} {'Δloss zero':>10} {'Δinduction':>10}  verdict"
    lines = [head, "-" * len(head)]
    for f in findings:
        line = f"{f.kind:<16} {f'L{f.layer}H{f.head}':>7} {f.score:>7.3f} {'' if f.copying is None else f'{f.copying:.2f}':>8}"
        if validated:
            verdict = "flagged: no effect" if f.flagged else ("confirmed" if f.confirmed else "-")
            drop = "" if f.induction_drop is None else f"{-f.induction_drop:+.3f}"
            line += f" {f.causal_effect:>+10.3f} {f.zero_effect:>+10.3f} {drop:>10}  {verdict}"
        lines.append(line)
    if validated:
        lines.append("Δloss: change of the repeated-half loss (nats) when the head is ablated (mean / zero); "
                     "Δinduction: change of later induction heads' score when a previous-token head is mean-ablated; "
                     "copying: OV lift of the attended token (std devs)")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    from tqdm import tqdm

    from interp import load
    from interp.heads import FindConfig, heads_report
    from interp.io import check_file_target, write_text

    kinds = parse_kinds(args.kind)  # bad input fails before the model loads
    config = FindConfig(n_seqs=args.seqs, seg_len=args.seg_len, seed=args.seed, error_measure=args.error_measure,
                        exclude_bos=args.exclude_bos, exclude_current_token=args.exclude_current_token).validate(args.top)
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
    out = render(report.findings, args.format)
    if args.out:
        write_text(args.out, out)
    else:
        print(out, end="")
    if args.plot:
        from interp.viz.heads import score_heatmaps
        from interp.viz.html import write_figure

        source = "text" if text is not None else f"{args.seqs} repeated-token sequences of 2x{args.seg_len}"
        fig = score_heatmaps(report.scores, report.findings, title=f"{model.info.name}: head scores on {source}")
        write_figure(fig, args.plot)
    return 0
