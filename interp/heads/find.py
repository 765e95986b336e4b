"""`find_heads`: the detector the CLI and the dashboard call. Scores every head, keeps the top
ones per kind, adds the copying score of induction candidates and, with validate=True, the
causal effect of ablating each one, flagging heads whose pattern is there but whose ablation
changes nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from torch import Tensor

from interp.data.synthetic import repeated_tokens
from interp.errors import WorkbenchError
from interp.heads.copying import copying_scores
from interp.heads.detect import KINDS, check_kinds, head_scores, top_heads
from interp.heads.validate import ablated_pattern_scores, ablation_effects
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model


@dataclass
class FindConfig:
    n_seqs: int = 16  # repeated-token probe sequences
    seg_len: int = 50  # tokens per segment (each sequence is BOS + 2 x seg_len)
    seed: int = 0  # seed of the probe tokens
    exclude_bos: bool = False  # as TL detect_head: ignore attention to BOS
    exclude_current_token: bool = False  # as TL detect_head: ignore attention to the current token
    error_measure: str = "mul"  # "mul" (fraction of attention) or "abs" (1 - distance), as TL
    min_score: float = 0.3  # a pattern score at least this high counts as "high"
    min_effect: float = 0.05  # nats: an ablation that raises the repeated-half loss less "changes nothing"
    min_copying: float = 0.5  # an induction head must also copy: its OV lifts the read token this many std devs
    min_induction_drop: float = 0.05  # previous-token heads: or lower later induction scores this much
    validate_seqs: int = 8  # probe sequences for the causal checks
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
        if self.error_measure not in ("mul", "abs"):
            raise WorkbenchError(f"unknown error measure {self.error_measure!r}; choose 'mul' or 'abs'")
        return self


@dataclass
class HeadFinding:
    layer: int
    head: int  # query head (GQA models report per query head)
    kind: str  # "previous-token" | "duplicate-token" | "induction"
    score: float  # pattern score (see interp.heads.scores)
    copying: float | None = None  # induction candidates: OV copying score (interp.heads.copying)
    causal_effect: float | None = None  # validated: repeated-half loss increase under mean-ablation (nats)
    zero_effect: float | None = None  # validated: the same under zero-ablation
    induction_drop: float | None = None  # validated previous-token heads: fall of later induction heads' score
    flagged: bool = False  # validated: high pattern score but neither ablation changes the loss
    confirmed: bool | None = None  # validated: high score, mean-ablation effect (and copying, for induction)

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.causal_effect is None:
            for k in ("causal_effect", "zero_effect", "flagged", "confirmed"):
                d.pop(k)
        for k in ("copying", "induction_drop"):
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
    """`find_heads` plus every head's score (for heatmaps)."""
    cfg = (config or FindConfig()).validate(top)
    kinds = check_kinds(kinds)
    tokens = probe_tokens(model, text, cfg)
    scores = head_scores(
        model, tokens, kinds, exclude_bos=cfg.exclude_bos, exclude_current_token=cfg.exclude_current_token,
        error_measure=cfg.error_measure, batch_size=cfg.batch_size, progress=progress,
    )
    findings = [HeadFinding(layer, head, kind, score) for kind in kinds for layer, head, score in top_heads(scores[kind], top)]
    induction = [f for f in findings if f.kind == "induction"]
    if induction:
        probes = tokens if text is not None else tokens[: cfg.validate_seqs]
        for f, c in zip(induction, copying_scores(model, probes, [(f.layer, f.head) for f in induction])):
            f.copying = c
    if validate:
        _validate(model, findings, cfg, progress)
    return HeadsReport(scores, findings, int(tokens.numel()))


def _validate(model: Model, findings: list[HeadFinding], cfg: FindConfig, progress: Progress | None) -> None:
    # Fresh probes with a segment 20% shorter: real induction works at any distance, but a head
    # that learned a fixed offset (a 1-layer model trained on one segment length can) does not.
    seg_len = min(cfg.seg_len, (model.info.n_ctx - 1) // 2)
    seg_len = max(2, seg_len - max(1, seg_len // 5))
    probes = repeated_tokens(model, cfg.validate_seqs, seg_len, seed=cfg.seed + 1)
    heads = sorted({(f.layer, f.head) for f in findings})
    effects = ablation_effects(model, probes, heads, progress=progress)
    index = {h: i for i, h in enumerate(heads)}
    _downstream(model, probes, [f for f in findings if f.kind == "previous-token"], cfg)
    for f in findings:
        i = index[(f.layer, f.head)]
        f.causal_effect, f.zero_effect = float(effects["mean"][i]), float(effects["zero"][i])
        high = f.score >= cfg.min_score
        copies = f.kind != "induction" or (f.copying or 0.0) >= cfg.min_copying
        feeds = (f.induction_drop or 0.0) >= cfg.min_induction_drop  # previous-token heads only
        # confirmed by mean-ablation (zero-ablation also moves the input off-distribution);
        # flagged only when neither ablation changes anything
        f.confirmed = high and copies and (f.causal_effect >= cfg.min_effect or feeds)
        f.flagged = high and max(f.causal_effect, f.zero_effect) < cfg.min_effect and not feeds


def _downstream(model: Model, probes, prev: list[HeadFinding], cfg: FindConfig, n_watch: int = 5) -> None:
    """Each previous-token head's induction_drop: how much mean-ablating it lowers the mean
    induction score of the induction heads (the top n_watch scoring >= min_score on the
    validation probes, else the top one) in later layers."""
    if not prev:
        return
    induction = head_scores(model, probes, ("induction",), batch_size=cfg.batch_size)["induction"]
    ranked = top_heads(induction, n_watch)
    watch = [(layer, head) for layer, head, score in ranked if score >= cfg.min_score] or [ranked[0][:2]]
    scores = ablated_pattern_scores(model, probes, [[]] + [[(f.layer, f.head)] for f in prev], watch)
    clean, ablated = scores[0], scores[1:]
    for f, row in zip(prev, ablated):
        later = [w for w, (layer, _) in enumerate(watch) if layer > f.layer]
        f.induction_drop = float((clean[later] - row[later]).mean()) if later else 0.0
