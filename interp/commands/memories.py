"""`interp memories`: FFN key-value memories (Geva et al. 2021).

index      stream a corpus through a model, keep every neuron's top trigger prefixes, project
           its value to the vocabulary, measure agreement; resumable (rerun to continue)
show       one memory: trigger examples with the trigger token marked [[like this]], value tokens
agreement  agreement by layer vs the random baseline, and key shallowness (table + HTML plot)
search     neurons whose values promote a token
intervene  switch a memory off/on on a prompt and show what changes
"""

from __future__ import annotations

from pathlib import Path

from interp.errors import WorkbenchError
from interp.parse import LAYERS_HELP, parse_layers


def add_parser(sub) -> None:
    p = sub.add_parser("memories", help="FFN key-value memories: index, show, agreement, search, intervene")
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    i = s.add_parser("index", help="build (or resume) a memory index")
    i.add_argument("--model", required=True, help="model spec (see `interp models`)")
    i.add_argument("--corpus", default=None, help="corpus spec: kjv (default), pydocs, synthetic, a folder, hf:NAME")
    i.add_argument("--layers", default=None, help=f"{LAYERS_HELP} (default all)")
    i.add_argument("--tokens", type=int, default=100_000, help="text tokens to index (default 100000)")
    i.add_argument("--top-k", type=int, default=25, help="trigger examples per neuron (default 25)")
    i.add_argument("--seq-len", type=int, default=64, help="window length in tokens (default 64)")
    i.add_argument("--batch-size", type=int, default=16)
    i.add_argument("--shard-tokens", type=int, default=65_536, help="tokens per resumable checkpoint")
    i.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    i.add_argument("--out", required=True, help="index folder (rerun with the same settings to resume)")
    i.set_defaults(func=run_index)

    sh = s.add_parser("show", help="one memory's trigger examples and value tokens")
    sh.add_argument("--index", required=True)
    sh.add_argument("--layer", type=int, required=True)
    sh.add_argument("--neuron", type=int, required=True)
    sh.add_argument("--triggers", type=int, default=10, help="trigger examples to print (default 10)")
    sh.set_defaults(func=run_show)

    a = s.add_parser("agreement", help="key-value agreement by layer vs a random baseline")
    a.add_argument("--index", required=True)
    a.add_argument("--html", default=None, help="plot file (default INDEX/agreement.html)")
    a.set_defaults(func=run_agreement)

    se = s.add_parser("search", help="neurons whose values promote a token")
    se.add_argument("--index", required=True)
    se.add_argument("--token", required=True)
    se.add_argument("--top", type=int, default=20)
    se.set_defaults(func=run_search)

    iv = s.add_parser("intervene", help="switch a memory off/on for a prompt")
    iv.add_argument("--model", required=True)
    iv.add_argument("--prompt", required=True)
    iv.add_argument("--layer", type=int, required=True)
    iv.add_argument("--neuron", type=int, required=True)
    iv.add_argument("--mode", choices=["off", "on"], default="off")
    iv.add_argument("--value", type=float, default=None, help="coefficient for --mode on")
    iv.add_argument("--device", default=None)
    iv.set_defaults(func=run_intervene)


def run_index(args) -> int:
    from tqdm import tqdm

    from interp import load
    from interp.data.corpus import open_corpus
    from interp.io import check_dir_target
    from interp.memories import IndexSettings, build_index

    if args.batch_size < 1:
        raise WorkbenchError(f"--batch-size must be positive, got {args.batch_size}")
    layers = parse_layers(args.layers)  # bad input fails before the model loads
    settings = IndexSettings(corpus=open_corpus(args.corpus).name, layers=layers, n_tokens=args.tokens,
                             top_k=args.top_k, seq_len=args.seq_len, shard_tokens=args.shard_tokens).check_sizes()
    check_dir_target(args.out, "--out")
    model = load(args.model, device=args.device)
    bar: dict[str, tqdm] = {}  # the current stage's bar: "keys" (tokens), then "values" (layers)

    def progress(done: int, total: int, message: str) -> None:
        stage = "keys" if message.startswith("indexing") else "values"
        if stage not in bar:
            for old in bar.values():
                old.close()
            bar.clear()
            unit = "tok" if stage == "keys" else "layer"
            bar[stage] = tqdm(total=total, desc="indexing keys" if stage == "keys" else "projecting values", unit=unit)
        bar[stage].n = done
        if stage == "values":
            bar[stage].set_postfix_str(message)
        bar[stage].refresh()

    index = build_index(model, settings, args.out, batch_size=args.batch_size, progress=progress)
    for b in bar.values():
        b.close()
    print(f"indexed {index.n_tokens} tokens, layers {index.layers[0]}..{index.layers[-1]} -> {args.out}")
    _print_agreement(index.agreement())
    return 0


def run_show(args) -> int:
    from interp.memories import open_index

    view = open_index(args.index).show(args.layer, args.neuron, n_triggers=args.triggers)
    print(f"memory L{view.layer} N{view.neuron}  (active on {view.active_fraction:.1%} of indexed tokens)")
    print("trigger examples (coefficient, doc:pos, prefix with the trigger token in [[ ]], next token):")
    for t in view.triggers:
        nxt = f"  -> {t.next!r}" if t.next is not None else ""
        print(f"  {t.coefficient:8.3f}  {t.doc_id}:{t.position:<6} ...{''.join(t.before)}[[{t.token}]]{nxt}")
    print("value's top tokens:")
    print("  " + "  ".join(f"{tok!r} {p:.3g}" for tok, p in view.value_tokens[:10]))
    return 0


def _print_agreement(rows: list[dict]) -> None:
    print(f"{'layer':>5}  {'agree':>6}  {'random':>6}  {'any':>6}  {'random':>6}  {'hit@n':>6}  {'random':>6}  "
          f"{'sameLast':>8}  {'random':>6}  {'active':>6}")  # fmt: skip
    for r in rows:
        print(
            f"{r['layer']:>5}  {r['agreement']:6.3f}  {r['agreement_baseline']:6.3f}  {r['agreement_any']:6.3f}  "
            f"{r['agreement_any_baseline']:6.3f}  {r['hit_rate']:6.3f}  {r['hit_rate_baseline']:6.3f}  "
            f"{r['same_last']:8.3f}  {r['same_last_baseline']:6.3f}  {r['active_fraction']:6.3f}"
        )


def run_agreement(args) -> int:
    from interp.memories import open_index
    from interp.viz.html import write_figure
    from interp.viz.memories import agreement_figure

    index = open_index(args.index)
    rows = index.agreement()
    _print_agreement(rows)
    html = Path(args.html) if args.html else Path(args.index) / "agreement.html"
    try:
        write_figure(agreement_figure(rows, title=f"FFN memories of {index.model_info.get('name', '?')}"), html)
    except OSError as e:
        raise WorkbenchError(f"cannot write {str(html)!r} ({e.strerror}); pass --html PATH") from e
    print(f"plot: {html}")
    return 0


def run_search(args) -> int:
    from interp.memories import open_index

    hits = open_index(args.index).search(args.token, top=args.top)
    if not hits:
        print(f"no indexed neuron has {args.token!r} among its value's top tokens")
        return 0
    print(f"{'layer':>5}  {'neuron':>6}  {'token':<16}  {'prob':>7}  rank")
    for h in hits:
        print(f"{h.layer:>5}  {h.neuron:>6}  {h.token!r:<16}  {h.prob:7.4f}  {h.rank}")
    return 0


def run_intervene(args) -> int:
    from interp import load
    from interp.memories import intervene

    r = intervene(load(args.model, device=args.device), args.prompt, args.layer, args.neuron, args.mode, args.value)
    print(f"L{r.layer} N{r.neuron} {r.mode} (coefficient {r.original_coefficient:.3f} -> {r.coefficient:.3f}); "
          f"value promotes {r.value_token!r}: p {r.value_token_prob[0]:.3g} -> {r.value_token_prob[1]:.3g}; KL {r.kl:.4f}")  # fmt: skip
    print("before: " + "  ".join(f"{t!r} {p:.3g}" for t, p in r.top_before[:5]))
    print("after:  " + "  ".join(f"{t!r} {p:.3g}" for t, p in r.top_after[:5]))
    print(f"generation before: {r.generation_before!r}")
    print(f"generation after:  {r.generation_after!r}")
    return 0
