"""`find_heads`: the detector the CLI and the dashboard call. Scores every head, keeps the top
ones per kind, adds both copying scores of induction candidates and, with validate=True, the
causal effect of ablating each one (with a 95% interval over the probe sequences), confirming
heads whose effect is clearly there and flagging heads whose pattern is there but whose
ablation clearly changes nothing.

What confirms a head (validate=True):
- its pattern score is at least `min_score` (in the default "target" measure: on average over
  the rows that have a target, at least this share of its attention is on it; the same meaning
  for every kind);
- induction heads must also copy: the direct-logit copying z-score (interp.heads.copying) at
  least `min_copying`. We confirm with the z-score, not with the OV eigenvalue score beside it,
  because the z-score reads the value vectors the head really reads in the probe run, while
  the eigenvalue score assumes the head reads raw token embeddings, which a head in layer 18 of
  30 does not;
- the 95% interval of its mean-ablation effect on the repeated-half loss lies above
  `min_effect` (its lower end >= min_effect), or, for previous-token heads, mean-ablating it
  lowers later induction heads' scores by at least `min_induction_drop`.
A head is flagged when its score is high but the intervals of both its mean- and its
zero-ablation effects lie below `min_effect` (upper ends < min_effect) and it feeds no
induction head; a head that is neither is inconclusive on this many probe sequences.
Every verdict comes with its reason (`judge`: HeadFinding.verdict and .why), e.g. "not confirmed:
score 0.310 < 0.5 although its Δloss +1.263 [...] nats is clear", which the CLI and the dashboard print.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from torch import Tensor

from interp.data.synthetic import repeated_tokens
from interp.errors import WorkbenchError
from interp.heads.copying import copying_scores, ov_copying
from interp.heads.detect import KINDS, check_kinds, check_measure, scores_and_rows, top_heads
from interp.heads.scores import MEASURES
from interp.heads.validate import ablated_pattern_scores, ablation_effects
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model


@dataclass
class FindConfig:
    n_seqs: int = 16  # repeated-token probe sequences
    seg_len: int = 50  # tokens per segment (each sequence is BOS + 2 x seg_len)
    seed: int = 0  # seed of the probe tokens (and of the OV token sample)
    measure: str = "target"  # pattern score: "target" (Olsson et al.'s prefix-matching score, for
    # every kind: mean attention on the target over the rows that have one), or TL detect_head's
    # "tl-mul" / "tl-abs" (for parity with TL; "mul" / "abs" accepted; see interp.heads.scores)
    exclude_bos: bool = False  # as TL detect_head: ignore attention to BOS
    exclude_current_token: bool = False  # as TL detect_head: ignore attention to the current token
    min_score: float = 0.5  # "high" pattern score; with measure "target": on average over the rows
    # that have a target, at least half of the head's attention is on it, for every kind
    # (TL's "mul" tops out near 0.5 for induction and duplicate-token heads: lower it with "tl-mul")
    min_effect: float = 0.05  # nats: the repeated-half loss change an ablation must clearly exceed
    min_copying: float = 0.5  # an induction head must also copy: its OV lifts the read token this many std devs
    min_induction_drop: float = 0.05  # previous-token heads: or lower later induction scores this much
    validate_seqs: int = 8  # probe sequences for the causal checks (the intervals are over these)
    ov_tokens: int | None = 2048  # token sample of the OV eigenvalue copying score (None: the whole pool)
    batch_size: int = 32  # sequences per forward pass when scoring

    def validate(self, top: int | None = None) -> FindConfig:
        """The model-free checks (also of `top`, the heads reported per kind), so a front end
        can run them before loading a model."""
        if top is not None and top < 1:
            raise WorkbenchError(f"the number of heads to report per kind must be at least 1, got {top}")
        if self.n_seqs < 1 or self.validate_seqs < 1 or self.batch_size < 1:
            raise WorkbenchError("probe sequences, validation sequences and batch size must be at least 1")
        if self.seg_len < 2:
            raise WorkbenchError(f"repeated segments need at least 2 tokens, got {self.seg_len}")
        if self.ov_tokens is not None and self.ov_tokens < 2:
            raise WorkbenchError(f"the OV copying score needs a sample of at least 2 tokens, got {self.ov_tokens}")
        self.measure = check_measure(self.measure)
        return self


@dataclass
class HeadFinding:
    layer: int
    head: int  # query head (GQA models report per query head)
    kind: str  # "previous-token" | "duplicate-token" | "induction"
    score: float  # pattern score in the report's measure (see interp.heads.scores)
    copying: float | None = None  # induction candidates: direct-logit copying z-score (interp.heads.copying)
    ov_copying: float | None = None  # induction candidates: OV eigenvalue score sum(l)/sum(|l|), in [-1, 1]
    causal_effect: float | None = None  # validated: repeated-half loss increase under mean-ablation (nats)
    causal_effect_lo: float | None = None  # its 95% bootstrap interval over the probe sequences
    causal_effect_hi: float | None = None
    zero_effect: float | None = None  # validated: the same under zero-ablation
    zero_effect_lo: float | None = None
    zero_effect_hi: float | None = None
    induction_drop: float | None = None  # validated previous-token heads: fall of later induction heads' score
    flagged: bool = False  # validated: high pattern score but both ablations clearly change nothing
    confirmed: bool | None = None  # validated: high score, clear mean-ablation effect (and copying, for induction)
    verdict: str | None = None  # validated: "confirmed" | "flagged" | "not confirmed" (`judge`)
    why: str | None = None  # validated: the verdict's reason, with the numbers and thresholds it compared

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.causal_effect is None:
            for k in ("causal_effect", "causal_effect_lo", "causal_effect_hi", "zero_effect", "zero_effect_lo",
                      "zero_effect_hi", "flagged", "confirmed", "verdict", "why"):
                d.pop(k)
        for k in ("copying", "ov_copying", "induction_drop"):
            if d.get(k, 0) is None:
                d.pop(k)
        return d


def probe_tokens(model: Model, text: str | None, cfg: FindConfig):
    """The user's text as one sequence (BOS first), or the repeated-token probes."""
    if text is None:
        return repeated_tokens(model, cfg.n_seqs, cfg.seg_len, seed=cfg.seed)
    if model.tokenizer is None:
        raise WorkbenchError("text mode needs a model with a tokenizer; load it with interp.load(spec)")
    if not text.strip():
        raise WorkbenchError("the text is empty; give a file with some text in it")
    tokens = model.to_tokens(text)
    if tokens.shape[1] < 3:
        raise WorkbenchError("the text is too short to score heads on; give at least a sentence")
    return tokens


@dataclass
class HeadsReport:
    scores: dict[str, Tensor]  # kind -> Float[Tensor, "layer head"], every head's pattern score
    findings: list[HeadFinding]  # the top heads of each kind, best first within a kind
    n_tokens: int  # tokens scored (all sequences together)
    measure: str = "target"  # the pattern score's measure (interp.heads.scores.MEASURES)
    target_rows: dict[str, int] = field(default_factory=dict)  # kind -> rows that had a target
    ov_tokens: int | None = None  # size of the token sample of the OV copying scores
    validate_seqs: int | None = None  # probe sequences the causal checks (and their intervals) used

    def describe_measure(self) -> str:
        """One line saying what the scores are."""
        return MEASURE_LINES[self.measure]


MEASURE_LINES = {
    "target": "score: mean attention on the target over the rows that have one (Olsson et al.'s prefix matching)",
    "tl-mul": "score: TL detect_head 'mul', attention on the pattern's cells / all attention (rows without a target count)",
    "tl-abs": "score: TL detect_head 'abs', 1 - sum|A - D| / positions",
}
assert set(MEASURE_LINES) == set(MEASURES)


def find_heads(
    model: Model,
    kinds=KINDS,
    top: int = 5,
    text: str | None = None,
    validate: bool = False,
    progress: Progress | None = None,
    config: FindConfig | None = None,
) -> list[HeadFinding]:
    """The `top` heads of each kind, best first. Scores come from `text` (one sequence) or from
    repeated-token probes; copying for induction candidates; with `validate`, causal checks by
    mean- and zero-ablation on repeated-token probes (the task these heads serve)."""
    return heads_report(model, kinds, top, text, validate, progress, config).findings


def heads_report(
    model: Model,
    kinds=KINDS,
    top: int = 5,
    text: str | None = None,
    validate: bool = False,
    progress: Progress | None = None,
    config: FindConfig | None = None,
) -> HeadsReport:
    """`find_heads` plus every head's score (for heatmaps) and what the scores measured."""
    cfg = (config or FindConfig()).validate(top)
    kinds = check_kinds(kinds)
    tokens = probe_tokens(model, text, cfg)
    scores, rows = scores_and_rows(
        model, tokens, kinds, measure=cfg.measure, exclude_bos=cfg.exclude_bos,
        exclude_current_token=cfg.exclude_current_token, batch_size=cfg.batch_size, progress=progress,
    )
    findings = [HeadFinding(layer, head, kind, score) for kind in kinds for layer, head, score in top_heads(scores[kind], top)]
    induction = [f for f in findings if f.kind == "induction"]
    ov_n = None
    if induction:
        probes = tokens if text is not None else tokens[: cfg.validate_seqs]
        heads = [(f.layer, f.head) for f in induction]
        for f, c, ov in zip(induction, copying_scores(model, probes, heads), ov_copying(model, heads, cfg.ov_tokens, cfg.seed)):
            f.copying, f.ov_copying, ov_n = c, ov.score, ov.n_tokens
    if validate:
        _validate(model, findings, cfg, progress)
    return HeadsReport(scores, findings, int(tokens.numel()), cfg.measure, rows, ov_n,
                       cfg.validate_seqs if validate else None)


def _validate(model: Model, findings: list[HeadFinding], cfg: FindConfig, progress: Progress | None) -> None:
    # Fresh probes with a segment 20% shorter: real induction works at any distance, but a head
    # that learned a fixed offset (a 1-layer model trained on one segment length can) does not.
    seg_len = min(cfg.seg_len, (model.info.n_ctx - 1) // 2)
    seg_len = max(2, seg_len - max(1, seg_len // 5))
    probes = repeated_tokens(model, cfg.validate_seqs, seg_len, seed=cfg.seed + 1)
    heads = sorted({(f.layer, f.head) for f in findings})
    effects = ablation_effects(model, probes, heads, progress=progress, seed=cfg.seed)
    index = {h: i for i, h in enumerate(heads)}
    _downstream(model, probes, [f for f in findings if f.kind == "previous-token"], cfg)
    for f in findings:
        i = index[(f.layer, f.head)]
        mean, zero = effects["mean"][i].interval, effects["zero"][i].interval
        f.causal_effect, f.causal_effect_lo, f.causal_effect_hi = mean.value, mean.lo, mean.hi
        f.zero_effect, f.zero_effect_lo, f.zero_effect_hi = zero.value, zero.lo, zero.hi
        f.verdict, f.why = judge(f, cfg)
        f.confirmed, f.flagged = f.verdict == "confirmed", f.verdict == "flagged"


def judge(f: HeadFinding, cfg: FindConfig) -> tuple[str, str]:
    """(verdict, why) of a finding whose ablation effects are filled in: "confirmed", "flagged" or
    "not confirmed", and the comparisons that decided it, numbers and thresholds included (the rule
    of the module docstring). Confirmed by mean-ablation (zero-ablation also moves the input
    off-distribution); flagged only when neither ablation can be told apart from "less than min_effect"."""
    if f.causal_effect is None or f.causal_effect_lo is None or f.zero_effect_hi is None:
        raise WorkbenchError(f"L{f.layer}H{f.head} has no ablation effect to judge; run the causal check (validate=True)")
    high = f.score >= cfg.min_score
    copies = f.kind != "induction" or (f.copying is not None and f.copying >= cfg.min_copying)
    feeds = (f.induction_drop or 0.0) >= cfg.min_induction_drop  # previous-token heads only
    clear = f.causal_effect_lo >= cfg.min_effect
    effect = f"Δloss {f.causal_effect:+.3f} [{f.causal_effect_lo:+.3f}, {f.causal_effect_hi:+.3f}] nats"
    score = f"score {f.score:.3f}"
    drop = "" if f.induction_drop is None else f"later induction scores drop {f.induction_drop:+.3f}"
    if high and copies and (clear or feeds):
        parts = [f"{score} ≥ {cfg.min_score:g}"]
        if f.kind == "induction":
            parts.append(f"copy z {f.copying:.2f} ≥ {cfg.min_copying:g}")
        parts.append(f"{effect}, lower end ≥ {cfg.min_effect:g}" if clear else f"{drop} ≥ {cfg.min_induction_drop:g}")
        return "confirmed", "; ".join(parts)
    if high and max(f.causal_effect_hi, f.zero_effect_hi) < cfg.min_effect and not feeds:
        why = (f"{score} ≥ {cfg.min_score:g} but no effect: {effect} (mean) and {f.zero_effect:+.3f} "
               f"[{f.zero_effect_lo:+.3f}, {f.zero_effect_hi:+.3f}] (zero), both upper ends < {cfg.min_effect:g}")
        return "flagged", why + (f"; {drop} < {cfg.min_induction_drop:g}" if drop else "")
    fails = []
    if not high:
        fails.append(f"{score} < {cfg.min_score:g}"
                     + (f" although its {effect} is clear (lower end ≥ {cfg.min_effect:g}): the head matters, "
                        f"but its {f.kind} pattern is too weak" if clear else ""))  # fmt: skip
    if not copies:
        fails.append("no copying score" if f.copying is None else f"copy z {f.copying:.2f} < {cfg.min_copying:g}")
    if not (clear or feeds):
        fails.append(f"{effect}: lower end < {cfg.min_effect:g}" + (f" and {drop} < {cfg.min_induction_drop:g}" if drop else "")
                     + (f" (inconclusive: an effect ≥ {cfg.min_effect:g} is not ruled out either)"
                        if max(f.causal_effect_hi, f.zero_effect_hi) >= cfg.min_effect else ""))
    return "not confirmed", "; ".join(fails)


def _downstream(model: Model, probes, prev: list[HeadFinding], cfg: FindConfig, n_watch: int = 5) -> None:
    """Each previous-token head's induction_drop: how much mean-ablating it lowers the mean
    induction score (in the config's measure) of the induction heads (the top n_watch scoring
    >= min_score on the validation probes, else the top one) in later layers."""
    if not prev:
        return
    induction = scores_and_rows(model, probes, ("induction",), measure=cfg.measure, batch_size=cfg.batch_size)[0]
    ranked = top_heads(induction["induction"], n_watch)
    watch = [(layer, head) for layer, head, score in ranked if score >= cfg.min_score] or [ranked[0][:2]]
    scores = ablated_pattern_scores(model, probes, [[]] + [[(f.layer, f.head)] for f in prev], watch,
                                    measure=cfg.measure)
    clean, ablated = scores[0], scores[1:]
    for f, row in zip(prev, ablated):
        later = [w for w, (layer, _) in enumerate(watch) if layer > f.layer]
        f.induction_drop = float((clean[later] - row[later]).mean()) if later else 0.0
