"""`interp features`: sparse dictionaries (TopK transcoders and SAEs) and their features as memories.

corpus    build the varied offline corpus (man pages, Debian docs, KJV, Python docs, PyPI texts,
          optionally text sampled from the model), deduplicated, with a held-out split; prints
          tokens per source (specs "mix" and "mix:heldout" afterwards)
train     train a dictionary for every chosen layer from one forward stream (resumable: rerun)
eval      FVU, L0, dead/dense shares, CE recovered and KL on held-out text (writes eval.json)
convert   write a dictionary in SAELens's format (ours, SAELens and sparsify folders are all read)
index     the features' top activating contexts, decoder projections and agreement (a feature index)
show      one feature: its activating contexts with the token marked [[like this]], the tokens its
          decoder row promotes, its density, the most similar features
search    features whose decoder rows promote a token
compare   features beside neurons per layer: agreement with p-values, the same-last-token proxy
trace     the features behind a prompt's prediction; --off LAYER:FEATURE switches some off
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from interp.commands import helped
from interp.errors import WorkbenchError
from interp.parse import LAYERS_HELP, parse_layers


def add_parser(sub) -> None:
    p = sub.add_parser("features", help="dictionaries (transcoders, SAEs) and features as memories: corpus, train, "
                       "eval, convert, index, show, search, compare, trace", **helped(
                           "Train and evaluate sparse dictionaries (transcoders, SAEs) on a model's activations, and "
                           "read their features as key-value memories.",
                           "interp features train --model smollm2-135m --layers 5 --out runs/tc",
                           "interp features trace --model smollm2-135m --dict runs/tc --prompt 'The capital of France is'"))  # fmt: skip
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    _making_actions(s)
    _reading_actions(s)


def _making_actions(s) -> None:
    """corpus, train, eval, convert: the actions that make and judge a dictionary."""
    c = s.add_parser("corpus", help="build the varied offline corpus for dictionaries", **helped(
        "Build the mixed offline corpus (scripture, Python docs, man pages, ...) dictionaries train on, tokenized.",
        "interp features corpus --model smollm2-135m"))
    c.add_argument("--model", required=True, help="model spec whose tokenizer the corpus is tokenized with")
    c.add_argument("--sources", default="kjv,pydocs,man,debian-doc,pypi", help="comma list; add 'model' for samples")
    c.add_argument("--sample-tokens", type=int, default=0, help="tokens sampled from the model (source 'model')")
    c.add_argument("--heldout-permille", type=int, default=20, help="documents held out, per 1000 (default 20)")
    c.set_defaults(func=run_corpus)

    t = s.add_parser("train", help="train dictionaries for every chosen layer (rerun to resume)", **helped(
        "Train a TopK transcoder (or SAE) per chosen layer on the corpus; rerun with the same settings to resume.",
        "interp features train --model smollm2-135m --layers 5 --d-sae 4096 --k 32 --out runs/tc"))
    t.add_argument("--model", required=True)
    t.add_argument("--site", default="mlp", help="mlp (transcoder, default), mlp_out, resid_pre, resid_post")
    t.add_argument("--layers", default=None, help=f"{LAYERS_HELP} (default all)")
    t.add_argument("--d-sae", type=int, default=4096, help="latents per layer (default 4096)")
    t.add_argument("--k", type=int, default=32, help="active latents per token (default 32)")
    t.add_argument("--skip", action="store_true", help="a linear skip connection (transcoders)")
    t.add_argument("--decode", choices=("sparse", "dense"), default="sparse",
                   help="the training decode: an embedding bag over the k active rows (sparse) or a dense product "
                        "(same loss and gradients; which is faster depends on the device: benchmarks/features_profile.py)")
    t.add_argument("--corpus", default="mix", help="corpus spec: mix (default; build it first), kjv, pydocs, a folder")
    t.add_argument("--tokens", type=int, default=1_000_000)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--cache", action="store_true", help="keep activations in memory between epochs")
    t.add_argument("--seq-len", type=int, default=128)
    t.add_argument("--batch-tokens", type=int, default=4096)
    t.add_argument("--lr", type=float, default=None, help="Adam's rate (default 2e-4 / sqrt(d_sae / 16384))")
    t.add_argument("--auxk-alpha", type=float, default=1 / 32)
    t.add_argument("--dead-tokens", type=int, default=1_000_000, help="tokens idle before a latent counts as dead")
    t.add_argument("--dtype", default="float32", help="the dictionaries' matmuls: float32 or bfloat16")
    t.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints (0: none)")
    t.add_argument("--device", default=None)
    t.add_argument("--out", required=True, help="dictionary folder (rerun with the same settings to resume)")
    t.set_defaults(func=run_train)

    e = s.add_parser("eval", help="evaluate a dictionary on held-out text", **helped(
        "Measure a dictionary on held-out text: FVU, L0, dead latents, and the loss with it spliced in.",
        "interp features eval --model smollm2-135m --dict runs/tc"))
    e.add_argument("--model", required=True)
    e.add_argument("--dict", required=True, help="dictionary folder (ours, SAELens or sparsify)")
    e.add_argument("--corpus", default="mix:heldout")
    e.add_argument("--tokens", type=int, default=65_536)
    e.add_argument("--seq-len", type=int, default=128)
    e.add_argument("--ce-tokens", type=int, default=None, help="splice (CE, KL) on this many tokens (default all)")
    e.add_argument("--splice", default=None, help=f"layers to splice alone: {LAYERS_HELP}, 'none' (default all)")
    e.add_argument("--no-all", action="store_true", help="skip splicing every layer at once")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--device", default=None)
    e.add_argument("--out", default=None, help="JSON file (default DICT/eval.json)")
    e.set_defaults(func=run_eval)

    v = s.add_parser("convert", help="write a dictionary in SAELens's format", **helped(
        "Write one of our dictionaries in SAELens's format (weights and cfg.json).",
        "interp features convert --dict runs/tc --out runs/tc-saelens"))
    v.add_argument("--dict", required=True)
    v.add_argument("--out", required=True)
    v.set_defaults(func=run_convert)


def _reading_actions(s) -> None:
    """index, show, search, compare, trace: the actions that read a dictionary's features."""
    i = s.add_parser("index", help="the features' top activating contexts, decoder projections and agreement", **helped(
        "Index a dictionary's features like memories: top activating contexts, promoted tokens, agreement.",
        "interp features index --model smollm2-135m --dict runs/tc --out runs/tc-index"))
    i.add_argument("--model", required=True)
    i.add_argument("--dict", required=True)
    i.add_argument("--corpus", default="mix:heldout")
    i.add_argument("--layers", default=None, help=f"{LAYERS_HELP} (default the dictionary's)")
    i.add_argument("--tokens", type=int, default=100_000)
    i.add_argument("--top-k", type=int, default=25)
    i.add_argument("--seq-len", type=int, default=64)
    i.add_argument("--permutations", type=int, default=1000)
    i.add_argument("--batch-size", type=int, default=16)
    i.add_argument("--device", default=None)
    i.add_argument("--out", required=True)
    i.set_defaults(func=run_index)

    sh = s.add_parser("show", help="one feature: contexts, promoted tokens, density, similar features", **helped(
        "Print one feature of an index: its contexts, the tokens it promotes, its density and its nearest features.",
        "interp features show --index runs/tc-index --layer 5 --feature 12 --dict runs/tc"))
    sh.add_argument("--index", required=True, help="a feature index (interp features index)")
    sh.add_argument("--layer", type=int, required=True)
    sh.add_argument("--feature", type=int, required=True)
    sh.add_argument("--contexts", type=int, default=10)
    sh.add_argument("--dict", default=None, help="the dictionary, for the most similar features")
    sh.set_defaults(func=run_show)

    se = s.add_parser("search", help="features whose decoder rows promote a token", **helped(
        "List the features of an index whose decoder rows promote a token most.",
        "interp features search --index runs/tc-index --token ' Paris'"))
    se.add_argument("--index", required=True)
    se.add_argument("--token", required=True)
    se.add_argument("--top", type=int, default=20)
    se.set_defaults(func=run_search)

    cm = s.add_parser("compare", help="features beside neurons: agreement and the monosemanticity proxy", **helped(
        "Set a feature index beside a neuron memory index built with the same settings, layer by layer.",
        "interp features compare --features runs/tc-index --neurons runs/mem"))
    cm.add_argument("--features", required=True, help="a feature index")
    cm.add_argument("--neurons", required=True, help="a neuron memory index built with the same settings")
    cm.add_argument("--json", default=None, help="also write the rows here")
    cm.set_defaults(func=run_compare)

    tr = s.add_parser("trace", help="the features behind a prompt's prediction", **helped(
        "Rank a transcoder's features behind a prompt's next-token prediction; --off switches some off.",
        "interp features trace --model smollm2-135m --dict runs/tc --prompt 'The capital of France is' --off 5:12"))
    tr.add_argument("--model", required=True)
    tr.add_argument("--dict", required=True, help="a transcoder (site mlp)")
    tr.add_argument("--prompt", required=True)
    tr.add_argument("--top", type=int, default=10)
    tr.add_argument("--per-layer", type=int, default=3)
    tr.add_argument("--off", action="append", default=[], metavar="LAYER:FEATURE", help="switch off; repeatable")
    tr.add_argument("--device", default=None)
    tr.set_defaults(func=run_trace)


def _bar(desc: str, unit: str):
    from tqdm import tqdm

    state: dict = {}

    def progress(done: int, total: int, message: str) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc=desc, unit=unit, unit_scale=True,
                                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")
        state["bar"].n = done
        state["bar"].set_postfix_str(message)
        state["bar"].refresh()

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return progress, close


def run_corpus(args) -> int:
    from interp import load
    from interp.data.mixture import SOURCES
    from interp.data.token_store import build_mixture

    sources = tuple(x.strip() for x in args.sources.split(",") if x.strip())
    bad = [x for x in sources if x not in SOURCES]
    if bad or not sources:
        raise WorkbenchError(f"unknown sources {bad or sources}; choose from {', '.join(SOURCES)}")
    if args.sample_tokens < 0 or not 0 < args.heldout_permille < 1000:
        raise WorkbenchError("--sample-tokens must be 0 or more and --heldout-permille between 1 and 999")
    model = load(args.model, device="cpu")
    progress, close = _bar("corpus", "doc")
    try:
        store = build_mixture(model, sources, args.heldout_permille, args.sample_tokens, progress=progress)
    finally:
        close()
    manifest = json.loads((store / "manifest.json").read_text())
    print(f"{'source':<12} {'train tokens':>14} {'held-out':>10} {'documents':>10}")
    for name, row in manifest["sources"].items():
        print(f"{name:<12} {row['train_tokens']:>14,} {row['heldout_tokens']:>10,} {row['train_docs'] + row['heldout_docs']:>10,}")
    print(f"{'total':<12} {manifest['tokens']['train']:>14,} {manifest['tokens']['heldout']:>10,}   -> {store}")
    return 0


def run_train(args) -> int:
    from interp import load
    from interp.features import TrainSettings, train
    from interp.io import check_dir_target

    s = TrainSettings(site=args.site, layers=parse_layers(args.layers), d_sae=args.d_sae, k=args.k, skip=args.skip,
                      corpus=args.corpus, n_tokens=args.tokens, seq_len=args.seq_len, batch_tokens=args.batch_tokens,
                      lr=args.lr, auxk_alpha=args.auxk_alpha, dead_tokens=args.dead_tokens, dtype=args.dtype,
                      checkpoint_every=args.checkpoint_every, epochs=args.epochs, cache=args.cache,
                      decode=args.decode).check_sizes()  # fmt: skip
    check_dir_target(args.out, "--out")
    model = load(args.model, device=args.device)
    progress, close = _bar("training", "tok")
    try:
        d = train(model, s, args.out, progress=progress)
    finally:
        close()
    print(f"{d} -> {args.out}")
    return 0


def run_eval(args) -> int:
    from interp import load
    from interp.features import load as load_dict
    from interp.features.evaluate import evaluate
    from interp.io import check_file_target, write_json

    if args.tokens < 1 or args.batch_size < 1:
        raise WorkbenchError("--tokens and --batch-size must be positive")
    out = Path(args.out) if args.out else Path(args.dict) / "eval.json"
    check_file_target(out, "--out")
    splice = [] if (args.splice or "").strip().lower() == "none" else parse_layers(args.splice)
    model = load(args.model, device=args.device)
    d = load_dict(args.dict, model, device=model.device)
    progress, close = _bar("evaluating", "tok")
    try:
        ev = evaluate(model, d, args.corpus, args.tokens, seq_len=args.seq_len, batch_size=args.batch_size, splice=splice,
                      all_at_once=not args.no_all, ce_tokens=args.ce_tokens, progress=progress)  # fmt: skip
    finally:
        close()
    write_json(out, ev.to_dict())
    print(f"{'layer':>5} {'FVU':>7} {'L0':>6} {'dead':>6} {'dense':>6} {'CE rec.':>8} {'KL':>8}")
    for r in ev.layers:
        print(f"{r.layer:>5} {r.fvu:>7.3f} {r.l0:>6.1f} {r.dead:>6.1%} {r.dense:>6.1%} {_num(r.ce_recovered, '8.3f')} "
              f"{_num(r.kl, '8.4f')}")  # fmt: skip
    if any(not math.isfinite(r.ce_spliced) for r in ev.layers):
        print("  -: not spliced alone (--splice names the layers spliced; this run left these out)")
    if any(math.isfinite(r.ce_spliced) and not math.isfinite(r.ce_recovered) for r in ev.layers):
        print("  - in CE rec. beside a KL: undefined, zero-ablating that layer leaves the loss as it is (nothing to recover)")
    if ev.all_spliced:
        a = ev.all_spliced
        print(f"all layers spliced at once: CE {a['ce_clean']:.3f} -> {a['ce_spliced']:.3f} (zero-ablated {a['ce_zero']:.3f}), "
              f"recovered {a['ce_recovered']:.3f}, KL {a['kl']:.4f}")  # fmt: skip
    print(f"{ev.n_tokens:,} held-out tokens -> {out}")
    return 0


def run_convert(args) -> int:
    from interp.features import load as load_dict
    from interp.features import save_saelens
    from interp.io import check_dir_target

    check_dir_target(args.out, "--out")
    save_saelens(load_dict(args.dict), args.out)
    print(f"SAELens folders (one per layer) -> {args.out}")
    return 0


def run_index(args) -> int:
    from interp import load
    from interp.features import load as load_dict
    from interp.features.memories import build_feature_index
    from interp.io import check_dir_target
    from interp.memories import IndexSettings

    settings = IndexSettings(corpus=args.corpus, layers=parse_layers(args.layers), n_tokens=args.tokens,
                             top_k=args.top_k, seq_len=args.seq_len, n_permutations=args.permutations).check_sizes()  # fmt: skip
    if args.batch_size < 1:
        raise WorkbenchError(f"--batch-size must be positive, got {args.batch_size}")
    check_dir_target(args.out, "--out")
    model = load(args.model, device=args.device)
    d = load_dict(args.dict, model, device=model.device)
    if settings.layers is None:
        settings.layers = list(d.layers)
    progress, close = _bar("indexing features", "tok")
    try:
        index = build_feature_index(model, d, settings, args.out, batch_size=args.batch_size, progress=progress)
    finally:
        close()
    print(f"indexed {index.n_tokens:,} tokens, layers {index.layers} -> {args.out}")
    return 0


def run_show(args) -> int:
    from interp.commands.memories import print_triggers
    from interp.features.memories import decoder_similar, open_feature_index

    if args.contexts < 1:
        raise WorkbenchError(f"--contexts must be at least 1, got {args.contexts}")
    index = open_feature_index(args.index)
    view = index.show(args.layer, args.feature, n_triggers=args.contexts)
    print(f"feature {args.layer}:{args.feature}  (active on {view.active_fraction:.2%} of indexed tokens)")
    print("top activating contexts (activation, doc:pos, context with the token in [[ ]], next token):")
    print_triggers(view, "the feature never fired on the indexed tokens")
    print("decoder row's top tokens:  " + "  ".join(f"{tok!r} {p:.3g}" for tok, p in view.value_tokens[:10]))
    if args.dict:
        from interp.features import load as load_dict

        similar = decoder_similar(load_dict(args.dict), args.layer, args.feature)
        print("most similar features (decoder cosine): " + "  ".join(f"{f} {c:.2f}" for f, c in similar))
    return 0


def run_search(args) -> int:
    from interp.features.memories import open_feature_index

    hits = open_feature_index(args.index).search(args.token, top=args.top)
    for h in hits:
        print(f"  feature {h.layer}:{h.neuron:<6} {h.token!r} p={h.prob:.3g} (rank {h.rank})")
    if not hits:
        print(f"  no feature promotes {args.token!r} among its top tokens")
    return 0


def run_compare(args) -> int:
    from interp.features.memories import compare, open_feature_index
    from interp.io import write_json
    from interp.memories import open_index

    rows = compare(open_feature_index(args.features), open_index(args.neurons))
    print(f"{'layer':>5} | {'agreement feat [95%]':>24} {'base':>6} {'p':>6} | {'neuron':>24} {'base':>6} {'p':>6} | "
          f"{'same-last feat':>15} {'neuron':>15}")  # fmt: skip
    for r in rows:
        f = {k: _num(v, "6.3f") for k, v in r.items()}
        a = {pre: f"{_num(r.get(pre + '_agreement'), '5.3f')} [{_num(r.get(pre + '_agreement_lo'), '5.3f')},"
                  f"{_num(r.get(pre + '_agreement_hi'), '5.3f')}]" for pre in ("feature", "neuron")}  # fmt: skip
        print(f"{r['layer']:>5} | {a['feature']:>24} {f['feature_agreement_baseline']} {f['feature_agreement_p']} | "
              f"{a['neuron']:>24} {f['neuron_agreement_baseline']} {f['neuron_agreement_p']} | "
              f"{_num(r.get('feature_same_last'), '15.3f')} {_num(r.get('neuron_same_last'), '15.3f')}")  # fmt: skip
    if any(not _finite(v) for r in rows for k, v in r.items() if k != "layer"):
        print("  -: not in that index: it was built before the figure was recorded (build it again to compare)")
    if args.json:
        write_json(args.json, rows)
    return 0


def run_trace(args) -> int:
    from interp import load
    from interp.features import load as load_dict
    from interp.features.trace import feature_trace, parse_feature, switch_off

    off = [parse_feature(x) for x in args.off]
    model = load(args.model, device=args.device)
    d = load_dict(args.dict, model, device=model.device)
    tr = feature_trace(model, d, args.prompt, top=args.top, per_layer=args.per_layer)
    print(f"prediction: {tr.token!r} (p={tr.prob:.3f})")
    print("features that raise it most (layer:feature, activation, direct effect on the logit, decoder's top tokens):")
    for f in tr.top:
        print(f"  {f.name:<10} {f.activation:8.3f} {f.contribution:+8.3f}  " + " ".join(repr(t) for t, _ in f.value_tokens[:5]))
    print("per layer (MLP effect = features + bias/skip + transcoder error):")
    for row in tr.layers:
        names = ", ".join(f"{f.name} {f.contribution:+.2f}" for f in row.features)
        print(f"  L{row.layer:<3} MLP {row.mlp_effect:+.3f} = features {row.feature_effect:+.3f} + bias {row.bias_effect:+.3f} "
              f"+ error {row.error_effect:+.3f}   top: {names}")
    if off:
        got = switch_off(model, d, args.prompt, off)
        print(f"switched off {', '.join(got['off'])}:")
        print("  before: " + "  ".join(f"{t!r} {p:.3f}" for t, p in got["before"]))
        print("  after:  " + "  ".join(f"{t!r} {p:.3f}" for t, p in got["after"]))
    return 0


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _num(x, spec: str) -> str:
    """`x` formatted by `spec`, or "-" (as wide) where it is missing or not a number; a legend under the
    table says why."""
    if _finite(x):
        return format(x, spec)
    width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
    return "-".rjust(int(width or 1))
