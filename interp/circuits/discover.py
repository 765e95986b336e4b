"""Automatic IOI circuit discovery: Wang et al.'s path-patching procedure, step by step, admitting every
head whose path effect clears a threshold (not the top head per class).

A step path-patches every head below its receivers and admits each head whose effect's magnitude is at
least `threshold` of the step's largest (and at least `floor` of the IOI gap): the threshold is a share,
so one value serves steps whose effects differ in scale (threshold None: the floor alone, an absolute
rule, so one dominant head does not raise the bar for the rest of its step); it is chosen on validation prompts carved from
the discovery side (benchmarks/ioi_threshold.py; RESULTS.md says when and on what). A head joins the
first step that admits it; where it attends names its class.

Two options of 2026-12-08 (`DiscoveryConfig`; benchmarks/ioi_admission.py compared them on validation):
`named_at_floor` (on by default: chosen on validation, confirmed on fresh draws, RESULTS.md) admits at the
logits step every head whose attention names a direct class (below) once its effect reaches the floor, the
share not needed (the share alone left a head on its bar, 20.0 at -0.036 against 0.045, to be admitted a
step later as a receiver); `paths="each"` measures a step with several receivers
also through each receiver alone and keeps, per sender, its strongest effect (signed) among those and the
all-at-once one. Wang et al. patch all receivers at once; then a sender's paths of opposite signs through
different receivers cancel (on one SmolLM2 draw 8.1's paths through S suppression head 20.0 and through the
S-inhibition heads were -0.037 and +0.037, so the duplicate-token head was left out). "each" costs one
more path-patching run per receiver.

1. To the logits: the direct heads. Those attending from END to IO are *name movers* (their path lowers
   the logit diff when corrupted) or *negative name movers* (raises it); those attending to S rather
   than IO are *S suppression* heads (a class the paper does not name: GPT-2 small lacks it, SmolLM2
   has it, e.g. 23.3); the rest are *other direct* heads (e.g. SmolLM2's last-layer heads).
   *Backup name movers* (Wang et al. section 3.4) are the heads that compensate when the name movers
   are knocked out: we run the clean prompts with the name movers' outputs taken from each prompt's own
   corruption and measure every later head's direct effect on the logit diff (its output at END read
   through the final norm and the IO - S unembedding, with the clean run's norm scale: `direct_effects`)
   with and without the knock-out; later heads whose direct effect rises by at least `backup_effect` of
   the IOI gap are backups (`effects["backup compensation"]` holds every head's rise).
2. To the queries at END of the name movers and S suppression heads: *S-inhibition* heads.
3. To the S-inhibition heads' keys and values at S2: *induction* heads (attending from S2 to S1+1 more
   than to S1) and *duplicate-token* heads (to S1 more).
4. To the induction heads' keys at S1+1: *previous-token* heads.

Effects are normalized logit-diff changes (0 = none, -1 = the whole clean-to-corrupted gap). The heads
come out ranked in the order they were admitted (`Discovery.ranked`: step by step, strongest first),
the order in which interp.circuits.evaluate adds them for the faithfulness-against-heads curve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from interp import hooks
from interp.circuits.path import PatchCaches, PathResult, Receivers, all_heads, path_patch
from interp.data.ioi import templates_used
from interp.data.task import Task
from interp.errors import WorkbenchError
from interp.types import Head, Progress

if TYPE_CHECKING:
    from interp.models import Model
CLASSES = (
    "name mover", "s suppression", "negative name mover", "backup name mover", "other direct", "s-inhibition",
    "induction", "duplicate token", "previous token",
)  # fmt: skip


POSITION_THRESHOLD = 0.001  # the default position threshold: chosen on validation (benchmarks/ioi_places.py, RESULTS.md)
N_DISCOVERY = 48  # the default discovery sample (and as many held-out prompts): chosen on validation (benchmarks/ioi_admission.py, RESULTS.md)
NAMED_AT_FLOOR = True  # the default admission of direct heads named by attention: chosen on validation and confirmed on
# fresh draws (benchmarks/ioi_admission.py, results/ioi_paths_cpu.json, RESULTS.md)
PATHS = ("joint", "each")  # how senders' paths to several receivers are measured (DiscoveryConfig.paths)
THRESHOLD = 0.05  # the default share of a step's largest path effect a head needs: chosen on validation (benchmarks/ioi_threshold.py, RESULTS.md)


@dataclass
class DiscoveryConfig:
    """How heads are admitted (path effects are normalized: shares of the IOI gap) and named."""

    threshold: float | None = THRESHOLD  # a head joins a step when |its effect| >= this share of the step's largest
    # (None: no share of the largest; the floor alone admits, an absolute rule)
    floor: float = 0.005  # ... and >= this share of the IOI gap (a step of tiny effects admits nothing)
    backup_effect: float = 0.02  # a later head whose direct effect rises by this share of the IOI gap when
    # the name movers are knocked out is a backup name mover
    io_attention: float = 0.2  # END -> IO (or S) attention that makes a direct head a name mover (S suppression)
    max_heads: int | None = None  # keep at most this many heads in all (the first admitted); None: all
    position_threshold: float | None = POSITION_THRESHOLD  # keep a head also at each segment where its gain reaches
    # this share of F(M) (interp.circuits.positions); None: each head only at its class's position
    position_rounds: int = 1  # rounds of that search
    named_at_floor: bool = NAMED_AT_FLOOR  # at the logits step, also admit each head whose attention names a direct class
    # (name mover, negative name mover, S suppression) once |its effect| reaches the floor (the share is then not needed)
    paths: str = "joint"  # to receiver heads: "joint" patches all receivers at once (Wang et al.); "each" also
    # patches each receiver alone and keeps, per sender, the strongest of those effects (paths of opposite signs
    # through different receivers can no longer cancel)
    chunk: int = 64  # senders per batch in path patching

    def rule(self) -> str:
        """The admission rule, in words."""
        text = f"threshold {self.threshold} of each step's largest effect" if self.threshold is not None else "no share"
        text += f", floor {self.floor} of the IOI gap"
        if self.named_at_floor:
            text += "; direct heads named by attention at the floor"
        return text + ("; receivers also one at a time" if self.paths == "each" else "")

    def __post_init__(self):
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise WorkbenchError(f"a discovery threshold is a share of a step's largest path effect: choose one in (0, 1] "
                                 f"(got {self.threshold})")  # fmt: skip
        if not 0 <= self.floor < 1 or (self.threshold is None and self.floor == 0):
            raise WorkbenchError(f"a discovery floor is a share of the IOI gap: choose one in (0, 1) (got {self.floor})")
        if self.position_threshold is not None and not 0 < self.position_threshold <= 1:
            raise WorkbenchError(f"a position threshold is a share of the model's logit diff: choose one in (0, 1] "
                                 f"(got {self.position_threshold}), or none")  # fmt: skip
        if self.position_rounds < 1:
            raise WorkbenchError(f"the position search needs at least 1 round (got {self.position_rounds})")
        if self.paths not in PATHS:
            raise WorkbenchError(f"discovery paths {self.paths!r}: choose one of {', '.join(PATHS)}")
        if self.max_heads is not None and self.max_heads < 1:
            raise WorkbenchError(f"keep at least 1 head (got max_heads {self.max_heads}), or no limit")


@dataclass
class Discovery:
    """What discovery found, and the evidence behind it."""

    classes: dict[str, list[Head]]  # class name -> heads (only non-empty classes)
    ranked: list[tuple[Head, str]]  # every head with its class, in the order discovery admitted them
    effects: dict[str, Float[Tensor, "layer head"]]  # step name -> normalized path-patching effect per sender
    attention: dict[str, Float[Tensor, "layer head"]]  # e.g. "END->IO" -> mean attention per head
    clean_logit_diff: float  # mean clean logit diff on the discovery prompts
    corrupted_logit_diff: float  # mean corrupted logit diff on the discovery prompts
    config: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    templates: list[str] = field(default_factory=list)  # base templates the discovery prompts use
    names: list[str] = field(default_factory=list)  # the names they draw from
    places: dict[Head, list[str]] | None = None  # head -> segments it works at (None: its class's position)
    position_gains: Float[Tensor, "layer head segment"] | None = None  # the position search's last gains

    def heads(self) -> list[Head]:
        return sorted({h for hs in self.classes.values() for h in hs})


def attention_between(pattern: dict[int, Tensor], ds: Task, dest: str, src: str) -> Float[Tensor, "layer head"]:
    """Mean attention from each prompt's `dest` position to its `src` position, per head."""
    rows = torch.arange(len(ds))
    d, s = ds.positions[dest], ds.positions[src]
    return torch.stack([p[rows, :, d, s].mean(0) for _, p in sorted(pattern.items())]).cpu()


def logit_diff_directions(model: Model, ds: Task, resid_end: Float[Tensor, "batch d_model"]) -> Float[Tensor, "batch d_model"]:
    """Per prompt, the direction d with x . d = x's direct contribution to logit(IO) - logit(S):
    the final norm's linear part (centring for LayerNorm, the weight) with this run's own norm
    scale at END, times the IO - S unembedding. resid_end . d + the norm's and b_U's constant
    terms = the logit diff."""
    from interp.lens import final_norm

    W_U = model.bridge.W_U
    u = (W_U[:, ds.answers.to(W_U.device)] - W_U[:, ds.distractors.to(W_U.device)]).T.float()  # [batch d_model]
    kind, weight = final_norm(model)
    r = resid_end.float()
    if weight is not None:
        u = u * weight.float()
    if kind == "LN":
        u = u - u.mean(-1, keepdim=True)
        r = r - r.mean(-1, keepdim=True)
    if kind is not None:
        eps = float(getattr(model.bridge.cfg, "eps", 1e-5))
        u = u / (r.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return u


def _head_effects(model: Model, z_end: dict[int, Tensor], d: Tensor) -> Float[Tensor, "layer head batch"]:
    """Each head's output at END (z @ W_O) dotted with the per-prompt directions d [batch d_model]."""
    out = torch.empty(model.info.n_layers, model.info.n_heads, d.shape[0])
    for layer, z in z_end.items():
        W_O = model.bridge.blocks[layer].attn.W_O.float()  # [head d_head d_model]
        per_head = einops.einsum(z.float(), W_O, "b head e, head e d -> b head d")
        out[layer] = einops.einsum(per_head, d, "b head d, b d -> head b").cpu()
    return out


@torch.no_grad()
def direct_effects(model: Model, ds: Task, replaced: dict[Head, Tensor] | None = None,
                   directions: Tensor | None = None) -> tuple[Float[Tensor, "layer head batch"], Tensor]:
    """(each head's direct effect on the logit diff per prompt, the directions used): its output
    at END (z @ W_O) dotted with `logit_diff_directions` -- of this run, or the given
    `directions` [batch d_model] -- in a run of the clean prompts where each head in `replaced`
    takes the given output (hook_z values [batch pos d_head]). The run stops at the final norm."""
    L = model.info.n_layers
    replaced = replaced or {}
    end = ds.end.to(ds.clean.device)
    rows = torch.arange(len(ds), device=end.device)
    got: dict = {}

    def edit(z: Tensor, hook, layer: int) -> Tensor:
        for (rl, h), value in replaced.items():
            if rl == layer:
                z[:, :, h] = value.to(z.dtype)
        got[layer] = z[rows, end].detach()
        return z

    def keep_final(x: Tensor, hook) -> None:
        got["final"] = x[rows, end].detach()

    edits = [(hooks.name("z", layer), partial(edit, layer=layer)) for layer in range(L)]
    edits.append((hooks.final_resid(L), keep_final))
    hooks.run_until(model, ds.clean, edits, last=hooks.final_resid(L))
    final = got.pop("final")
    d = logit_diff_directions(model, ds, final) if directions is None else directions
    return _head_effects(model, got, d), d


@torch.no_grad()
def compensation(model: Model, ds: Task, cached: PatchCaches, knocked_out: list[Head]) -> Float[Tensor, "layer head"]:
    """How much each head's direct effect rises when the heads in `knocked_out` take their output
    from each prompt's ABC corruption: mean over prompts, as a share of the IOI gap. Both runs are
    read with the clean run's final-norm scale, so a head counts only when its own output
    changes, not because the knock-out shrinks the residual stream the final norm divides by.
    The clean run's outputs come from `cached` (path patching's clean cache)."""
    end = ds.end.to(ds.clean.device)
    rows = torch.arange(len(ds), device=end.device)
    clean = cached.clean
    directions = logit_diff_directions(model, ds, clean[hooks.final_resid(model.info.n_layers)][rows, end])
    before = _head_effects(model, {layer: clean[hooks.name("z", layer)][rows, end]
                                   for layer in range(model.info.n_layers)}, directions)
    replaced = {(layer, h): cached.corrupted[hooks.name("z", layer)][:, :, h] for layer, h in knocked_out}
    after, _ = direct_effects(model, ds, replaced, directions)
    gap = float(cached.clean_metric.mean() - cached.corrupted_metric.mean())
    return (after - before).mean(-1) / gap


def admitted(effect: Float[Tensor, "layer head"], cfg: DiscoveryConfig, taken: set[Head],
             at_floor: Tensor | None = None) -> list[Head]:  # fmt: skip
    """The heads a step admits (see the module docstring), strongest first; heads already taken, and
    heads the step did not patch (NaN), left out. `at_floor` [layer head] marks heads that need only
    the floor, not the share of the step's largest."""
    ok = ~effect.isnan()
    if not bool(ok.any()):
        return []
    mag = effect.abs().nan_to_num(0.0)
    cut = max(cfg.threshold * float(mag.max()) if cfg.threshold is not None else 0.0, cfg.floor)
    keep = mag >= cut
    if at_floor is not None:
        keep |= at_floor & (mag >= cfg.floor)
    cand = [(float(mag[layer, h]), (layer, h)) for layer, h in (keep & ok).nonzero().tolist()]
    return [head for _, head in sorted(cand, reverse=True) if head not in taken]


def strongest(grids: list[Float[Tensor, "layer head"]]) -> Float[Tensor, "layer head"]:
    """Per head, the effect of largest magnitude among `grids` (signed; NaN where every grid is NaN)."""
    G = torch.stack(grids)
    pick = G.abs().nan_to_num(-1.0).argmax(0, keepdim=True)
    return G.gather(0, pick)[0]


def direct_class(head: Head, e: Tensor, att: dict[str, Tensor], cfg: DiscoveryConfig) -> str:
    """A direct head's class, by the sign of its path effect and where END attends."""
    layer, h = head
    to_io, to_s = float(att["END->IO"][layer, h]), float(max(att["END->S1"][layer, h], att["END->S2"][layer, h]))
    if to_io >= cfg.io_attention and to_io >= to_s:
        return "name mover" if float(e[layer, h]) < 0 else "negative name mover"
    if to_s >= cfg.io_attention and float(e[layer, h]) < 0:
        return "s suppression"
    return "other direct"


def named_heads(e: Tensor, att: dict[str, Tensor], cfg: DiscoveryConfig) -> Tensor:
    """[layer head] True where a head's attention (and the sign of its logits effect `e`) names a direct
    class other than "other direct": the heads `named_at_floor` admits at the floor."""
    L, H = e.shape
    return torch.tensor([[direct_class((layer, h), e, att, cfg) != "other direct" for h in range(H)] for layer in range(L)])


class DiscoverySteps:
    """The path-patching steps of one discovery, sharing one pair of cached runs."""

    def __init__(self, model: Model, ds: Task, cfg: DiscoveryConfig, progress: Progress | None):
        self.model, self.ds, self.cfg, self.progress = model, ds, cfg, progress
        L = model.info.n_layers
        self.cached = PatchCaches.collect(model, ds, extra=hooks.names("pattern", range(L)))
        pattern = {layer: self.cached.clean[hooks.name("pattern", layer)] for layer in range(L)}
        self.att = {f"{d}->{s}": attention_between(pattern, ds, d, s) for d, s in
                    [("END", "IO"), ("END", "S2"), ("END", "S1"), ("S2", "S1+1"), ("S2", "S1"), ("S1+1", "S1")]}  # fmt: skip
        self.effects: dict[str, Tensor] = {}
        self.ranked: list[tuple[Head, str]] = []

    def patch(self, i: int, name: str, receivers: Receivers | None) -> Tensor:
        """Path-patch every head below the receivers (all heads, to the logits); the effect grid."""
        model, (L, H) = self.model, (self.model.info.n_layers, self.model.info.n_heads)
        if self.progress:
            self.progress(i, 5, f"path patching to {name}")
        below = max(layer for layer, _ in receivers.heads) if receivers else L
        senders = [(layer, h) for layer, h in all_heads(model) if layer < below]
        if not senders:
            self.effects[name] = torch.full((L, H), float("nan"))
        else:
            res: PathResult = path_patch(model, self.ds, senders, receivers, chunk=self.cfg.chunk, caches=self.cached)
            self.effects[name] = res.grid(L, H).detach()
            if receivers is not None and self.cfg.paths == "each" and len(receivers.heads) > 1:
                self.effects[name] = strongest([self.effects[name]] + [self.alone(r, receivers) for r in receivers.heads])
        return self.effects[name]

    def direct(self) -> Tensor:
        """Step 1: path patching to the logits, the direct heads admitted and named (heads named by their
        attention at the floor with `named_at_floor`); the effect grid."""
        e, cfg = self.patch(1, "logits", None), self.cfg
        self.admit(e, lambda h: direct_class(h, e, self.att, cfg), named_heads(e, self.att, cfg) if cfg.named_at_floor else None)
        return e

    def alone(self, r: Head, receivers: Receivers) -> Tensor:
        """Every head below receiver `r` path-patched to `r` alone (as `receivers` names its inputs)."""
        L, H = self.model.info.n_layers, self.model.info.n_heads
        senders = [(layer, h) for layer, h in all_heads(self.model) if layer < r[0]]
        if not senders:
            return torch.full((L, H), float("nan"))
        one = Receivers([r], receivers.components, receivers.position)
        return path_patch(self.model, self.ds, senders, one, chunk=self.cfg.chunk, caches=self.cached).grid(L, H).detach()

    def admit(self, effect: Tensor, name_of, at_floor: Tensor | None = None) -> list[Head]:
        """Admit a step's heads (each named by `name_of(head)`), in order; what was admitted."""
        taken = {h for h, _ in self.ranked}
        out = admitted(effect, self.cfg, taken, at_floor)
        self.ranked += [(h, name_of(h)) for h in out]
        return out

    def of(self, *classes: str) -> list[Head]:
        return [h for h, c in self.ranked if c in classes]


def check_depth(model: Model) -> None:
    """The IOI circuit's steps need at least 4 layers."""
    if model.info.n_layers < 4:
        raise WorkbenchError(f"{model.info.name} has {model.info.n_layers} layers; the IOI circuit needs at least 4 "
                             "(use a deeper model)")  # fmt: skip


def discover(
    model: Model, ds: Task, config: DiscoveryConfig | None = None, progress: Progress | None = None
) -> Discovery:
    """Run the path-patching steps on the IOI task `ds` (named positions IO, S1, S1+1, S2, END) and admit
    and name heads (see the module docstring)."""
    cfg = config or DiscoveryConfig()
    check_depth(model)
    if progress:
        progress(0, 5, "running clean and corrupted prompts")
    st = DiscoverySteps(model, ds, cfg, progress)
    st.direct()
    movers = st.of("name mover")
    if movers:
        rise = compensation(model, ds, st.cached, movers)
        st.effects["backup compensation"] = rise
        later = rise.clone()
        later[: min(layer for layer, _ in movers) + 1] = float("nan")  # only later layers can respond
        later[rise < cfg.backup_effect] = float("nan")
        taken = {h for h, _ in st.ranked}
        st.ranked += [(h, "backup name mover") for h in sorted(
            (tuple(x) for x in (~later.isnan()).nonzero().tolist()), key=lambda x: -float(rise[x])) if h not in taken]  # fmt: skip
    receivers = st.of("name mover", "s suppression")
    if receivers:
        st.admit(st.patch(2, "mover queries", Receivers(receivers, "q", "END")), lambda h: "s-inhibition")
    if st.of("s-inhibition"):
        ind, dup = st.att["S2->S1+1"], st.att["S2->S1"]
        st.admit(st.patch(3, "s-inhibition keys/values", Receivers(st.of("s-inhibition"), "kv", "S2")),
                 lambda h: "induction" if ind[h] >= dup[h] else "duplicate token")  # fmt: skip
    if st.of("induction"):
        st.admit(st.patch(4, "induction keys", Receivers(st.of("induction"), "k", "S1+1")), lambda h: "previous token")
    if progress:
        progress(5, 5, "discovery done")
    ranked = st.ranked[: cfg.max_heads] if cfg.max_heads else st.ranked
    classes = {c: hs for c, hs in ((c, [h for h, k in ranked if k == c]) for c in CLASSES) if hs}
    clean, corrupted = float(st.cached.clean_metric.mean()), float(st.cached.corrupted_metric.mean())
    places, gains = None, None
    if cfg.position_threshold is not None and classes:
        from interp.circuits.evaluate import abc_means
        from interp.circuits.head_configs import CLASS_POSITIONS
        from interp.circuits.positions import POSITION_ABC, find_places

        del st.cached  # the path-patching caches are done with
        means = abc_means(model, ds, POSITION_ABC)
        places, gains = find_places(model, ds, classes, CLASS_POSITIONS, cfg.position_threshold, means, cfg.position_rounds)
    return Discovery(classes, ranked, st.effects, st.att, clean, corrupted, cfg, templates_used(ds),
                     list(ds.source.get("names", [])), places, gains)  # fmt: skip
