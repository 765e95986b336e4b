"""Training TopK dictionaries for every layer of a model from one forward stream.

Each step takes `batch_tokens // seq_len` windows of the corpus (a fixed order for the seed),
runs them through the model once with hooks on every chosen layer's site (the pass stops after the
deepest one), drops BOS and padding, and takes one Adam step on every layer's dictionary at once
(interp.features.loss; layers share no parameter, so this is the same as one optimizer per layer).

Activations are divided by each layer's rms scale (loss.rms_scale, from the first batch) while
training, and the scales are folded into the weights at the end (loss.fold_scales): one learning
rate then suits every layer, and the saved dictionary reads and writes the model's own units.

Options: bf16 matmuls (parameters and Adam state stay float32), AuxK dead-latent revival, a
learning rate with linear warm-up and a linear decay to 0 over the last `decay_fraction` of the
steps, and checkpoints in OUT/checkpoint (written atomically every `checkpoint_every` steps).

Epochs: `epochs` passes over the same windows, each pass in its own seeded order; with `cache`
the activations of each window are kept in memory after its first pass (a CPU trains one layer
for several epochs at the cost of one forward pass; memory: tokens x layers x 2 x d_model floats).

Exact resumption: the batch of step s is a pure function of (corpus, seed, s), the learning rate
a pure function of s, and a checkpoint holds the parameters, Adam's state, the steps done and
every latent's tokens-since-fired count, so a resumed run computes what the uninterrupted one
would have, bit for bit on the same device (tests/features/test_train.py). (With `cache`, a resumed
run recomputes the activations the cache held; they match the cached ones to float rounding.)

Why not sparsify's Trainer (RESULTS.md says more): it drives a Hugging Face model through
`register_forward_hook` on module names with its own DataLoader, not a hooked Model; its
checkpoints switch the schedule-free optimizer to eval and back (which moves the weights, so a
saved run and an unsaved one differ); it reports progress to Weights & Biases only; it has no
held-out evaluation. Its objective is the same as ours (TopK, AuxK, FVU).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from interp.errors import WorkbenchError
from interp.features import formats
from interp.features.activations import capture_sites, token_table, valid_positions
from interp.features.dictionary import Dictionary, DictionaryConfig
from interp.features.loss import DECODES, fold_scales, initialize, normalize_decoder, remove_parallel_grad, rms_scale, step_loss
from interp.features.sites import get_site
from interp.io import check_dir_target, write_dir
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model


@dataclass
class TrainSettings:
    site: str = "mlp"  # interp.features.sites: mlp (transcoder), mlp_out, resid_pre, resid_post
    layers: list[int] | None = None  # None: every layer
    d_sae: int = 4096  # latents per layer
    k: int = 32  # latents active per token
    skip: bool = False  # a linear skip connection (transcoders)
    corpus: str = "kjv"  # corpus spec (interp.data.corpus, or a built mixture "mix")
    n_tokens: int = 1_000_000  # text tokens to train on
    seq_len: int = 128  # window length (BOS included)
    batch_tokens: int = 4096  # tokens per step (windows of seq_len)
    lr: float | None = None  # Adam's rate; None: 2e-4 / sqrt(d_sae / 16384) (Gao et al.'s scaling)
    warmup_steps: int = 50  # linear warm-up
    decay_fraction: float = 0.2  # linear decay to 0 over this last share of the steps
    auxk_alpha: float = 1 / 32  # weight of the AuxK term (0: off)
    dead_tokens: int = 1_000_000  # a latent idle for this many tokens is dead (AuxK revives it)
    dtype: str = "float32"  # the matmuls' dtype: float32 or bfloat16 (parameters stay float32)
    seed: int = 0  # initialization and corpus order
    checkpoint_every: int = 0  # steps between checkpoints (0: none before the end)
    layer_chunk: int = 0  # layers per backward pass (0: all at once; fewer = less memory)
    epochs: int = 1  # passes over the n_tokens, each in its own seeded order
    cache: bool = False  # keep every window's activations in memory after its first pass (epochs > 1 on a CPU)
    decode: str = "sparse"  # the training decode: sparse (embedding bag) or dense (matrix product); loss.step_loss

    def check_sizes(self) -> TrainSettings:
        for name in ("d_sae", "k", "n_tokens", "seq_len", "batch_tokens", "epochs"):
            if getattr(self, name) < 1:
                raise WorkbenchError(f"{name} must be positive, got {getattr(self, name)}")
        if self.k > self.d_sae:
            raise WorkbenchError(f"k {self.k} exceeds the dictionary size {self.d_sae}; use a k of at most {self.d_sae}")
        if self.batch_tokens < self.seq_len:
            raise WorkbenchError(f"batch_tokens {self.batch_tokens} is less than one window of seq_len {self.seq_len}")
        if self.decode not in DECODES:
            raise WorkbenchError(f"decode must be one of {', '.join(DECODES)}, got {self.decode!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise WorkbenchError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if not 0 <= self.decay_fraction <= 1 or self.warmup_steps < 0 or self.auxk_alpha < 0:
            raise WorkbenchError("decay_fraction must lie in [0, 1], warmup_steps and auxk_alpha must be 0 or more")
        get_site(self.site)
        if self.skip and not get_site(self.site).is_transcoder:
            raise WorkbenchError("--skip needs a transcoder (site mlp)")
        return self

    def resolved(self, model: Model) -> TrainSettings:
        info = model.info
        if info.attn_only or not info.d_mlp:
            raise WorkbenchError(f"{info.name} is attention-only: it has no MLP to transcode")
        layers = sorted(set(range(info.n_layers) if self.layers is None else self.layers))
        bad = [la for la in layers if not 0 <= la < info.n_layers]
        if bad or not layers:
            raise WorkbenchError(f"layers {bad or layers} out of range: {info.name} has layers 0..{info.n_layers - 1}")
        return replace(self, layers=layers).check_sizes()

    @property
    def base_lr(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(self.d_sae / 2**14)


def learning_rate(s: TrainSettings, step: int, total: int) -> float:
    """Linear warm-up over warmup_steps, then flat, then linear to 0 over the last decay_fraction."""
    warm = min(1.0, (step + 1) / s.warmup_steps) if s.warmup_steps else 1.0
    start = total * (1 - s.decay_fraction)
    decay = 1.0 if step < start or s.decay_fraction == 0 else max(0.0, (total - step) / (total - start))
    return s.base_lr * warm * decay


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # valid tokens trained on
    seconds: float = 0.0  # training time so far (all sessions)
    log: list[dict] = field(default_factory=list)  # progress records


@dataclass
class Trainer:
    """What one run holds: the model, settings, data, dictionary, optimizer and counters."""

    model: Model
    s: TrainSettings
    table: torch.Tensor  # [window, seq] in the corpus's cut order
    order: torch.Tensor  # the windows of every step, epoch after epoch (a seeded permutation each)
    d: Dictionary
    opt: torch.optim.Optimizer
    since_fired: torch.Tensor  # [layer, d_sae] tokens since each latent last fired
    state: TrainState
    scales: torch.Tensor  # [2, layer]: the input's and output's rms scale (loss.rms_scale), from the first batch
    cached: dict = field(default_factory=dict)  # window -> (x, y) [layer, seq, d] when s.cache

    @property
    def windows_per_step(self) -> int:
        return max(1, self.s.batch_tokens // self.s.seq_len)

    @property
    def total_steps(self) -> int:
        return math.ceil(len(self.order) / self.windows_per_step)


def build(model: Model, s: TrainSettings) -> Trainer:
    """A fresh run: the token table in its seeded order, an uninitialized dictionary, Adam."""
    table = token_table(model, s.corpus, s.seq_len, s.n_tokens, s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    order = torch.cat([torch.randperm(len(table), generator=gen) for _ in range(s.epochs)])
    info = model.info
    cfg = DictionaryConfig(site=s.site, layers=list(s.layers), d_in=info.d_model, d_out=info.d_model, d_sae=s.d_sae,
                           k=s.k, skip=s.skip, apply_b_dec_to_input=not get_site(s.site).is_transcoder,
                           model=formats.model_fingerprint(model))  # fmt: skip
    d = Dictionary(cfg, device=model.device)
    fused = model.device.type == "cuda"
    opt = torch.optim.Adam(d.parameters(), lr=s.base_lr, betas=(0.9, 0.999), eps=1e-8, fused=fused or None)
    since = torch.zeros(len(s.layers), s.d_sae, dtype=torch.long, device=model.device)
    scales = torch.ones(2, len(s.layers), device=model.device)
    return Trainer(model, s, table, order, d, opt, since, TrainState(), scales)


def train_step(t: Trainer) -> dict:
    """One step on every layer (module doc); returns the step's numbers (tensors on the device)."""
    s, d, model = t.s, t.d, t.model
    per = t.windows_per_step
    rows = t.order[t.state.step * per : (t.state.step + 1) * per]
    batch = t.table[rows]
    x, y = _activations(t, rows, batch)
    valid = valid_positions(batch, model.bos_token_id is not None).flatten().to(x.device)
    x, y = x[:, valid], y[:, valid]
    if t.state.step == 0:
        t.scales = torch.stack([rms_scale(x), rms_scale(y)])
    x = x / t.scales[0, :, None, None].to(x.dtype)
    y = y / t.scales[1, :, None, None].to(y.dtype)
    if t.state.step == 0:
        initialize(d, x, y, s.seed)
    for group in t.opt.param_groups:
        group["lr"] = learning_rate(s, t.state.step, t.total_steps)
    dead = t.since_fired > s.dead_tokens
    cdt = torch.bfloat16 if s.dtype == "bfloat16" else torch.float32
    chunk = s.layer_chunk or len(d.layers)
    fvu, aux, fired = [], [], []
    for lo in range(0, len(d.layers), chunk):
        part = d.rows(lo, lo + chunk)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cdt == torch.bfloat16):
            out = step_loss(part, x[lo : lo + chunk].to(cdt), y[lo : lo + chunk], dead[lo : lo + chunk], s.auxk_alpha,
                            s.decode)
        out.loss.backward()
        fvu.append(out.fvu), aux.append(out.auxk), fired.append(out.fired)
    if not d.site.is_transcoder:
        remove_parallel_grad(d)
    t.opt.step()
    t.opt.zero_grad(set_to_none=True)
    if not d.site.is_transcoder:
        normalize_decoder(d)
    n = int(valid.sum())
    t.since_fired += n
    t.since_fired.masked_fill_(torch.cat(fired), 0)
    t.state.step += 1
    t.state.tokens += n
    return {"fvu": torch.cat(fvu), "auxk": torch.cat(aux), "dead": dead.float().mean(-1), "tokens": n}


def _activations(t: Trainer, rows: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The site activations of the step's windows [layer, window * seq, d]: from the model, or
    from the cache (s.cache) for windows seen before."""
    ids = rows.tolist()
    if t.s.cache and all(i in t.cached for i in ids):
        xs, ys = zip(*(t.cached[i] for i in ids))
        return torch.cat(xs, 1), torch.cat(ys, 1)
    x, y = capture_sites(t.model, batch, t.d.site, t.d.layers)
    if t.s.cache:
        seq = batch.shape[1]
        for j, i in enumerate(ids):
            t.cached[i] = (x[:, j * seq : (j + 1) * seq].clone(), y[:, j * seq : (j + 1) * seq].clone())
    return x, y


# -- checkpoints -----------------------------------------------------------------------------


def save_checkpoint(t: Trainer, folder: Path) -> None:
    from safetensors.torch import save_file

    def fill(tmp: Path) -> None:
        tensors = {**{k: v.cpu().contiguous() for k, v in t.d.tensors().items()}, "since_fired": t.since_fired.cpu(),
                   "scales": t.scales.cpu()}
        save_file(tensors, str(tmp / "state.safetensors"))
        torch.save(t.opt.state_dict(), tmp / "optimizer.pt")
        (tmp / "trainer.json").write_text(json.dumps({"settings": asdict(t.s), "state": asdict(t.state)}))

    write_dir(folder, fill)


def load_checkpoint(t: Trainer, folder: Path) -> None:
    from safetensors.torch import load_file

    meta = json.loads((folder / "trainer.json").read_text())
    tensors = load_file(str(folder / "state.safetensors"), device=str(t.model.device))
    t.d.load_tensors(tensors)
    t.since_fired.copy_(tensors["since_fired"])
    t.scales = tensors["scales"]
    t.opt.load_state_dict(torch.load(folder / "optimizer.pt", map_location=t.model.device, weights_only=True))
    t.state = TrainState(**meta["state"])


def _read_json_or_none(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _start(out: Path, s: TrainSettings) -> str:
    """'fresh', 'resume' or 'done' for the folder `out` and these settings."""
    ckpt = _read_json_or_none(out / "checkpoint" / "trainer.json")
    if ckpt is not None:
        if ckpt.get("settings") != asdict(s):
            raise WorkbenchError(f"{str(out)!r} holds an unfinished run with other settings; choose a new folder "
                                 "or delete this one")  # fmt: skip
        return "resume"
    if (out / formats.OURS).is_file():
        if formats.read_meta(out).get("training", {}).get("settings") == asdict(s):
            return "done"
        raise WorkbenchError(f"{str(out)!r} holds a dictionary trained with other settings; choose a new folder")
    if out.exists() and any(out.iterdir()):
        raise WorkbenchError(f"{str(out)!r} is not empty and holds no dictionary run; choose an empty output folder")
    return "fresh"


def train(model: Model, settings: TrainSettings, out: str | Path, progress: Progress | None = None,
          log_every: int = 10, max_steps: int | None = None) -> Dictionary:  # fmt: skip
    """Train (or resume, or return the finished) dictionaries of `settings` into the folder
    `out` (our format, formats.py). `progress(tokens, total, message)` is called every
    `log_every` steps with tokens/s and the current mean FVU. `max_steps` stops early after
    a checkpoint (for tests of resumption)."""
    s = settings.resolved(model)
    out = Path(out).expanduser()
    check_dir_target(out, "dictionary folder")
    mode = _start(out, s)
    if mode == "done":
        return formats.load(out, model, device=model.device)
    t = build(model, s)
    if mode == "resume":
        load_checkpoint(t, out / "checkpoint")
    report = progress or (lambda done, total, message: None)
    total_tokens = s.n_tokens * s.epochs
    t0, tok0 = time.perf_counter(), t.state.tokens
    while t.state.step < t.total_steps:
        got = train_step(t)
        done = t.state.step
        if done % log_every == 0 or done == t.total_steps:
            rate = (t.state.tokens - tok0) / max(time.perf_counter() - t0, 1e-9)
            rec = {"step": done, "tokens": t.state.tokens, "fvu": float(got["fvu"].mean()),
                   "seconds": t.state.seconds + time.perf_counter() - t0,
                   "dead": float(got["dead"].mean()), "lr": t.opt.param_groups[0]["lr"], "tokens_per_s": rate}  # fmt: skip
            t.state.log.append(rec)
            report(t.state.tokens, total_tokens, f"step {done}/{t.total_steps} · {rate:,.0f} tok/s · FVU {rec['fvu']:.3f}")
        ckpt_due = s.checkpoint_every and done % s.checkpoint_every == 0 and done < t.total_steps
        if ckpt_due or (max_steps is not None and done >= max_steps):
            t.state.seconds += time.perf_counter() - t0
            t0, tok0 = time.perf_counter(), t.state.tokens
            save_checkpoint(t, out / "checkpoint")
            if max_steps is not None and done >= max_steps:
                return t.d
    t.state.seconds += time.perf_counter() - t0
    training = {"settings": asdict(s), "steps": t.state.step, "tokens": t.state.tokens, "seconds": t.state.seconds,
                "dead_fraction": float((t.since_fired > s.dead_tokens).float().mean()), "log": t.state.log}  # fmt: skip
    training["scales"] = t.scales.tolist()
    fold_scales(t.d, t.scales[0], t.scales[1])
    formats.save(t.d, out, training=training)  # replaces the folder, checkpoint and all, atomically
    return t.d
