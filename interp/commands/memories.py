"""`interp memories`: FFN key-value memories (Geva et al. 2021).

index      stream a corpus through a model, keep every neuron's top trigger prefixes, project
           its value to the vocabulary, measure agreement; resumable (rerun to continue)
show       one memory: trigger examples with the trigger token marked [[like this]], value tokens
agreement  agreement by layer vs the random baseline (interval, permutation p-value), and key
           shallowness (table + HTML plot)
search     memories whose values promote a token
intervene  switch a memory off/on on a prompt and show what changes
trace      the memories behind the prompt's predicted token, per layer and overall (ranked by their
           direct effect on it, or --rank lm-debugger), the first ones' total effect (switched
           off), the token's rank in each value, and the prediction with chosen ones switched off

A memory is one sign of a neuron: "+" where its coefficient is > 0 (value W_out[i]), "-" where it
is < 0 (value -W_out[i]); gated (SwiGLU) MLPs hold both, other MLPs are indexed on "+" only.
"""

from __future__ import annotations

from pathlib import Path

from interp.commands import helped
from interp.errors import WorkbenchError
from interp.parse import LAYERS_HELP, parse_layers


def add_parser(sub) -> None:
    p = sub.add_parser("memories", help="FFN key-value memories: index, show, agreement, search, intervene, trace",
                       **helped("FFN neurons as key-value memories (Geva et al. 2021): build an index of their "
                                "triggers and values, read it, and switch memories off or on.",
                                "interp memories index --model smollm2-135m --layers 20-29 --out runs/mem",
                                "interp memories trace --model smollm2-135m --prompt 'The capital of France is'"))  # fmt: skip
    s = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    _add_index(s)
    _add_show(s)
    _add_agreement(s)
    _add_search(s)
    _add_intervene(s)
    _add_trace(s)


def _add_index(s) -> None:
    i = s.add_parser("index", help="build (or resume) a memory index", **helped(
        "Stream a corpus through the model and keep each memory's top trigger examples and value tokens "
        "(resumable: rerun with the same settings).",
        "interp memories index --model smollm2-135m --layers 20-29 --tokens 200000 --out runs/mem"))
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


def _add_show(s) -> None:
    sh = s.add_parser("show", help="one memory's trigger examples and value tokens", **helped(
        "Print one memory of an index: the contexts that trigger it most and the tokens its value promotes.",
        "interp memories show --index runs/mem --layer 21 --neuron 1298 --sign -"))
    sh.add_argument("--index", required=True)
    sh.add_argument("--layer", type=int, required=True)
    sh.add_argument("--neuron", type=int, required=True)
    sh.add_argument("--sign", default="+", help="+ (coefficient > 0, default) or - (coefficient < 0, value -W_out)")
    sh.add_argument("--triggers", type=int, default=10, help="trigger examples to print (default 10)")
    sh.set_defaults(func=run_show)


def _add_agreement(s) -> None:
    a = s.add_parser("agreement", help="key-value agreement by layer vs a random baseline, with p-values", **helped(
        "How often a memory's value promotes the tokens that follow its triggers, per layer, against shuffled pairs.",
        "interp memories agreement --index runs/mem --sign +"))
    a.add_argument("--index", required=True)
    a.add_argument("--sign", default="all", help="all (both signs' memories, default), + or -")
    a.add_argument("--html", default=None, help="plot file (default INDEX/agreement.html)")
    a.set_defaults(func=run_agreement)


def _add_search(s) -> None:
    se = s.add_parser("search", help="memories whose values promote a token", **helped(
        "List the memories of an index whose values promote a token most.",
        "interp memories search --index runs/mem --token ' Paris' --top 10"))
    se.add_argument("--index", required=True)
    se.add_argument("--token", required=True)
    se.add_argument("--top", type=int, default=20, help="memories to list (default 20)")
    se.set_defaults(func=run_search)


def _add_intervene(s) -> None:
    iv = s.add_parser("intervene", help="switch a memory off/on for a prompt", **helped(
        "Switch one memory off (or on, at a coefficient) on a prompt and show the prediction and generation change.",
        "interp memories intervene --model smollm2-135m --prompt 'The capital of France is' --layer 21 --neuron 1298",
        "interp memories intervene --model smollm2-135m --prompt 'I like' --layer 3 --neuron 7 --mode on --value 5"))
    iv.add_argument("--model", required=True)
    iv.add_argument("--prompt", required=True)
    iv.add_argument("--layer", type=int, required=True)
    iv.add_argument("--neuron", type=int, required=True)
    iv.add_argument("--sign", default="+", help="+ (default) or -: which of the neuron's two memories")
    iv.add_argument("--mode", choices=["off", "on"], default="off")
    iv.add_argument("--value", type=float, default=None,
                    help="the memory's coefficient for --mode on (positive, at most 100x the neuron's scale on the prompt)")
    iv.add_argument("--generate", type=int, default=8, help="greedy tokens to generate before and after (default 8)")
    iv.add_argument("--device", default=None)
    iv.set_defaults(func=run_intervene)


def _add_trace(s) -> None:
    tr = s.add_parser("trace", help="the memories behind a prompt's next-token prediction (LM-Debugger's view)", **helped(
        "Rank the memories behind a prompt's next-token prediction (direct effect, or LM-Debugger's ranking), "
        "with the first ones' total effect.",
        "interp memories trace --model smollm2-135m --prompt 'The capital of France is' --index runs/mem",
        "interp memories trace --model smollm2-135m --prompt 'The capital of France is' --off 21:1298:+"))
    tr.add_argument("--model", required=True)
    tr.add_argument("--prompt", required=True)
    tr.add_argument("--index", default=None, help="a memory index of the same model, for trigger examples")
    tr.add_argument("--top", type=int, default=10, help="memories listed over all layers (default 10)")
    tr.add_argument("--per-layer", type=int, default=3, help="memories listed per layer (default 3; 0 = none)")
    tr.add_argument("--rank", default="direct", metavar="RANKING", help="direct (default: the direct effect on the "
                    "predicted token's logit) or lm-debugger (LM-Debugger's: |coefficient| x the value's norm)")  # fmt: skip
    tr.add_argument("--total", type=int, default=5, help="memories (the first of the ranking) whose total effect is "
                    "measured, each switched off in one more pass (default 5; 0 = none)")  # fmt: skip
    tr.add_argument("--off", action="append", default=[], metavar="MEMORY",
                    help="switch this memory off (LAYER:NEURON:SIGN, e.g. 21:1298:+) and show the new prediction; repeat to switch several off together")
    tr.add_argument("--device", default=None)
    tr.set_defaults(func=run_trace)


def _at_least(args, flag: str, low: int) -> None:
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    if value < low:
        raise WorkbenchError(f"{flag} must be at least {low}, got {value}")


def run_index(args) -> int:
    from interp.data.corpus import open_corpus
    from interp.io import check_dir_target, writer_lock
    from interp.memories import IndexSettings

    if args.batch_size < 1:
        raise WorkbenchError(f"--batch-size must be positive, got {args.batch_size}")
    layers = parse_layers(args.layers)  # bad input fails before the model loads
    if args.top_k > args.tokens > 0:
        raise WorkbenchError(f"--top-k {args.top_k} exceeds --tokens {args.tokens}: a memory cannot have more trigger "
                             "examples than there are tokens; use a smaller --top-k (25 is the usual)")  # fmt: skip
    settings = IndexSettings(corpus=open_corpus(args.corpus).name, layers=layers, n_tokens=args.tokens,
                             top_k=args.top_k, seq_len=args.seq_len, shard_tokens=args.shard_tokens).check_sizes()
    check_dir_target(args.out, "--out")
    with writer_lock(args.out, "--out"):  # a second build into --out is refused before the model loads
        return _index(args, settings)


def _index(args, settings) -> int:
    from tqdm import tqdm

    from interp import load
    from interp.memories import build_index

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

    try:
        index = build_index(model, settings, args.out, batch_size=args.batch_size, progress=progress)
    finally:  # the bar ends before any error line
        for b in bar.values():
            b.close()
    print(f"indexed {index.n_tokens} tokens, layers {index.layers[0]}..{index.layers[-1]} -> {args.out}")
    _print_agreement(index.agreement())
    return 0


def print_triggers(view, none: str) -> None:
    """A unit's trigger examples, one a line (`interp memories show`, `interp features show`); `none`
    says why there are none."""
    for t in view.triggers:
        nxt = f"  -> {t.next!r}" if t.next is not None else ""
        print(f"  {t.coefficient:8.3f}  {t.doc_id}:{t.position:<6} ...{''.join(t.before)}[[{t.token}]]{nxt}")
    if not view.triggers:
        print(f"  (none: {none})")


def run_show(args) -> int:
    from interp.memories import open_index

    _at_least(args, "--triggers", 1)
    view = open_index(args.index).show(args.layer, args.neuron, args.sign, n_triggers=args.triggers)
    print(f"memory {view.name}  (active on {view.active_fraction:.1%} of indexed tokens)")
    print("trigger examples (coefficient, doc:pos, prefix with the trigger token in [[ ]], next token):")
    print_triggers(view, "this memory was never active on the indexed tokens")
    print("value's top tokens:")
    print("  " + "  ".join(f"{tok!r} {p:.3g}" for tok, p in view.value_tokens[:10]))
    return 0


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


def _print_agreement(rows: list[dict]) -> None:
    n_perm = rows[0].get("n_permutations", 0) if rows else 0
    print(f"agreement: value's top token == next token after the top-1 trigger [95% Wilson interval]; random = "
          f"triggers handed to other memories of the layer (mean of {n_perm} permutations); p = permutation test")
    print(f"{'layer':>5}  {'memories':>8}  {'agree':>6} {'[95% CI]':>15}  {'random':>6}  {'p':>6}  {'any':>6}  "
          f"{'random':>6}  {'p':>6}  {'hit@n':>6}  {'random':>6}  {'sameLast':>8}  {'random':>6}  "
          f"{'sameBigr':>8}  {'random':>6}  {'active':>6}")  # fmt: skip
    for r in rows:
        ci = f"[{r['agreement_lo']:.4f},{r['agreement_hi']:.4f}]"
        print(
            f"{r['layer']:>5}  {r['n_memories']:>8}  {r['agreement']:6.4f} {ci:>15}  {r['agreement_baseline']:6.4f}  "
            f"{_p(r['agreement_p']):>6}  {r['agreement_any']:6.3f}  {r['agreement_any_baseline']:6.3f}  "
            f"{_p(r['agreement_any_p']):>6}  {r['hit_rate']:6.4f}  {r['hit_rate_baseline']:6.4f}  "
            f"{r['same_last']:8.3f}  {r['same_last_baseline']:6.3f}  {r['same_bigram']:8.3f}  "
            f"{r['same_bigram_baseline']:6.3f}  {r['active_fraction']:6.3f}"
        )


def run_agreement(args) -> int:
    from interp.memories import open_index
    from interp.viz.html import write_figure
    from interp.viz.memories import agreement_figure

    index = open_index(args.index)
    rows = index.agreement(args.sign)
    signs = " and ".join(index.signs) if args.sign == "all" else args.sign
    print(f"memories of sign {signs}, each layer's taken together")
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

    _at_least(args, "--top", 1)
    if not args.token:
        raise WorkbenchError("--token is empty: give the token to search for, e.g. --token Lord")
    hits = open_index(args.index).search(args.token, top=args.top)
    if not hits:
        print(f"no indexed memory has {args.token!r} among its value's top tokens")
        return 0
    print(f"{'memory':<14}  {'token':<16}  {'prob':>7}  rank")
    for h in hits:
        print(f"{f'L{h.layer} N{h.neuron}{h.sign}':<14}  {h.token!r:<16}  {h.prob:7.4f}  {h.rank}")
    return 0


class _Bar:
    """A tqdm bar driven by progress(done, total, message), opened on the first call."""

    def __init__(self, desc: str, unit: str):
        self.desc, self.unit, self.bar = desc, unit, None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_intervene(args) -> int:
    import math

    from interp import load
    from interp.memories import intervene
    from interp.memories.intervene import check_prompt
    from interp.memories.keys import check_sign

    check_prompt(args.prompt)
    check_sign(args.sign)
    _at_least(args, "--generate", 0)
    if args.value is not None and not math.isfinite(args.value):
        raise WorkbenchError(f"--value {args.value} is not a finite number: give the memory's coefficient, a positive "
                             "number (at most 100x the neuron's largest |coefficient| on the prompt)")  # fmt: skip
    if args.value is not None and args.mode != "on":
        raise WorkbenchError("--value sets the coefficient of --mode on; drop it or add --mode on")
    model = load(args.model, device=args.device)
    bar = _Bar("running the model", "pass")
    try:
        r = intervene(model, args.prompt, args.layer, args.neuron, args.mode, args.value, generate=args.generate,
                      sign=args.sign, progress=bar)  # fmt: skip
    finally:
        bar.close()
    print(f"L{r.layer} N{r.neuron}{r.sign} {r.mode} (its coefficient {r.memory_coefficient:.3f} -> {r.coefficient:.3f}; the "
          f"neuron's {r.neuron_coefficient:.3f}); "
          f"value promotes {r.value_token!r}: p {r.value_token_prob[0]:.3g} -> {r.value_token_prob[1]:.3g}; KL {r.kl:.4f}")  # fmt: skip
    print("before: " + "  ".join(f"{t!r} {p:.3g}" for t, p in r.top_before[:5]))
    print("after:  " + "  ".join(f"{t!r} {p:.3g}" for t, p in r.top_after[:5]))
    if args.generate:
        print(f"generation before: {r.generation_before!r}")
        print(f"generation after:  {r.generation_after!r}")
    return 0


def _print_memory(m, indent: str = "  ") -> None:
    values = " ".join(repr(t) for t, _ in m.value_tokens[:6])
    total = f"{m.total_effect:+9.4f} (p off {m.prob_off:.3g})" if m.total_effect is not None else f"{'-':>9}{'':14}"
    print(f"{indent}{m.contribution:+9.4f}  {total}  {m.name:<14} coef {m.coefficient:7.3f}  rank {m.token_rank:<6} "
          f"value: {values}")
    for t in m.triggers:
        nxt = f" -> {t.next!r}" if t.next is not None else ""
        print(f"{indent}{'':9}    trigger {t.coefficient:7.3f}: ...{''.join(t.before[-8:])}[[{t.token}]]{nxt}")


def run_trace(args) -> int:
    from interp import load
    from interp.memories import open_index, parse_memory, switch_off, trace
    from interp.memories.intervene import check_prompt
    from interp.memories.trace import RANKINGS

    check_prompt(args.prompt)
    _at_least(args, "--top", 1)
    _at_least(args, "--per-layer", 0)
    _at_least(args, "--total", 0)
    if args.rank not in RANKINGS:
        raise WorkbenchError(f"unknown ranking {args.rank!r}; use --rank {' or --rank '.join(RANKINGS)}")
    off = [parse_memory(text) for text in args.off]  # bad input fails before the model loads
    index = open_index(args.index) if args.index else None
    model = load(args.model, device=args.device)
    bar = _Bar("running the model", "layer")  # a long prompt's pass takes a while: layer by layer
    try:
        t = trace(model, args.prompt, top=args.top, per_layer=args.per_layer, index=index, progress=bar, rank=args.rank,
                  n_total=args.total)  # fmt: skip
    finally:
        bar.close()
    print(f"prompt ({len(t.str_tokens)} tokens) -> {t.token!r} (p {t.prob:.3g}, logit {t.logit:.3f}); "
          f"contributions = coefficient x value's logit for {t.token!r} / final-norm scale {t.scale:.4g} (direct effect)")
    print(f"ranked by {t.ranking_label}")
    print(f"columns: direct effect on the logit of {t.token!r}; total effect (its logit minus its logit with the memory "
          f"switched off at every position, for the first {args.total}) and p({t.token!r}) then; memory; coefficient; "
          f"rank of {t.token!r} in the memory's value (1 = the value's top token); the value's top tokens")  # fmt: skip
    print(f"memories raising {t.token!r} most, all layers:" if t.ranking == "direct" else
          "memories writing most (LM-Debugger's ranking), all layers:")  # fmt: skip
    for m in t.top:
        _print_memory(m)
    if t.against:
        print(f"memories lowering {t.token!r} most (direct effect):")
        for m in t.against:
            _print_memory(m)
    if any(m.total_effect is None for m in [*t.top, *t.against]):
        first = f"the first {args.total} raising it" if args.total else "none (--total 0)"
        print(f"  -: total effect not measured: it is measured for {first}, each switched off in a forward pass of "
              "its own (--total N for more)" + (f"; the memories lowering {t.token!r} never" if t.against else ""))  # fmt: skip
    if args.per_layer:
        print(f"by layer: the MLP's direct effect, then its first memories (ranked by {t.ranking}) with their direct effects")
        for layer in t.layers:
            tops = "  ".join(f"{m.name} {m.contribution:+.3f}" for m in layer.memories)
            print(f"  L{layer.layer:<3} {layer.mlp_effect:+8.3f}   {tops}")
    if off:
        r = switch_off(model, args.prompt, off)
        names = ", ".join(f"L{la} N{n}{s}" for la, n, s in r.memories)
        print(f"switched off {names}: p({r.token!r}) {r.prob_before:.3g} -> {r.prob_after:.3g}; "
              f"new prediction {r.new_token!r} (p {r.top_after[0][1]:.3g})")
        print("after:  " + "  ".join(f"{tok!r} {p:.3g}" for tok, p in r.top_after))
    return 0
