"""The streaming state of a memory index: `KeyCollector` keeps every indexed layer's running top-k
trigger positions and activity counts (interp.memories.keys' merges), hands out the forward hooks
that feed it, and checkpoints it as plain tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.memories.keys import SIGNS, check_sign, coefficient_hook, empty_topk, merge_topk, merge_topk_sparse, signed


def default_pending_bytes(device: torch.device) -> int:
    """How many bytes of coefficients a stacked collector keeps before merging (class doc)."""
    if device.type != "cuda":
        return 1 << 30
    from interp.models.device import available_bytes

    return int(min(max((available_bytes(device) or 0) // 16, 1 << 28), 1 << 33))


@dataclass
class LayerKeys:
    coef: Float[Tensor, "sign k neuron"]  # the k largest coefficients seen, per memory (sign, neuron)
    ref: Int[Tensor, "sign k neuron"]  # their global positions (window * seq_len + pos), -1 = empty
    active: Int[Tensor, "sign neuron"]  # how many valid positions had that sign's coefficient > 0


class KeyCollector:
    """Running top-k trigger positions and activity counts, for the chosen layers and `signs`
    (default both), starting on `device`, the values kept in `dtype` (build_index passes the
    model's: the values are coefficients, so nothing is lost and no batch is converted).

    Call `set_batch(refs, valid)` before each forward pass over a batch, with the global
    position of every token of the batch (flattened batch-major) and which ones count, and
    `flush()` after it.

    Device-following: each layer's state lives where that layer's coefficients arrive (a model
    split over devices keeps every layer's top-k on its own device); the batch's positions are
    copied once to each device that needs them.

    `stacked` (default: on CUDA) defers the merges: the hooks only keep each layer's
    coefficients, and `flush()` merges all pending layers (of one device) and signs in one
    stacked call -- a few dozen kernel launches and two host syncs per batch instead of per
    layer, which is what bounds a small batch on a GPU. Pending coefficients are flushed early
    past `max_pending_bytes` (default: a 16th of the device's free memory, between 256 MiB and
    8 GiB; 1 GiB off CUDA). Otherwise (the CPU default) each layer is merged as it comes.
    Either way the merge is `merge_topk_sparse` (`sparse=False`: the dense `merge_topk`, twice
    the work for two signs).

    `lagged` (default: stacked on CUDA) runs each batch's merge one batch late, on a side stream
    of its device: `flush()` after batch i's forward has been queued merges batch i-1, so the
    merge's host syncs (it needs to know how many candidates entered) wait only for the merge's
    own kernels, which run beside batch i's forward, instead of draining the whole queue and
    leaving the device idle while the next forward is launched. Everything that reads the state
    (`state`, `state_dict()`, `drain()`) first merges what is left and joins the side streams, so
    callers see the same state as without the lag; the cost is one more batch of coefficients
    held.

    `fused` (default: on CUDA) is `merge_topk_sparse`'s: the batch is read by one compiled scan
    (`scan_batch`; the first batch of a process pays for compiling it, about 13 s on an H200
    machine). Measured on an H200 (random-weight Llama shapes in bf16, 2 x 65,536 tokens, batch
    32 x 128, the second half timed against bare forwards of the same windows, 2026-12-02),
    before -> fused and lagged: 8b 1.35x -> 1.15x a bare forward, peak 62.5 -> 22.3 GiB (the
    forward's 15.0); 1.7b 1.53x -> 1.22x, peak 42.2 -> 7.4 GiB (4.5); 135m about 0.9-1.0x
    either way. Fused alone gave 8b 1.17x; lagged alone barely helps (its merge still makes a
    list of every candidate of the first batches). Gathering several batches per merge was
    tried and was slower at 1.7b (1.32x).
    Earlier, on an H200 (synthetic SwiGLU coefficients, 30 x 1536 neurons, top-25, past 40k
    positions, float32), before the merge ran in the model's dtype: one stacked flush of 4096 /
    8192 positions took 9.5 / 17.5 ms dense with one sign, 20.5 / 38.1 ms dense with two,
    11.8 / 15.2 ms sparse with two."""

    def __init__(self, layers: list[int], d_mlp: int, k: int, device=None, stacked: bool | None = None,
                 max_pending_bytes: int | None = None, signs: tuple[str, ...] = SIGNS, sparse: bool = True,
                 dtype: torch.dtype | None = None, lagged: bool | None = None, fused: bool | None = None):
        self.layers = list(layers)
        self.signs = tuple(check_sign(s) for s in signs)
        self.device = torch.device(device or "cpu")
        self.dtype = dtype or torch.float32
        self.stacked = self.device.type == "cuda" if stacked is None else stacked
        self.sparse = sparse
        self.fused = fused  # merge_topk_sparse's scan (None: fused on CUDA)
        self.max_pending_bytes = default_pending_bytes(self.device) if max_pending_bytes is None else max_pending_bytes
        self.lagged = (self.stacked and self.device.type == "cuda") if lagged is None else (lagged and self.stacked)
        self._state = {}
        for layer in self.layers:
            coef, ref = empty_topk(k, d_mlp, self.device, len(self.signs), self.dtype)
            active = torch.zeros(len(self.signs), d_mlp, dtype=torch.long, device=self.device)
            self._state[layer] = LayerKeys(coef, ref, active)
        self._late: list[tuple[dict[int, Tensor], Tensor, Tensor, dict]] = []  # lagged batches not merged yet
        self._sides: dict[torch.device, torch.cuda.Stream] = {}  # a side stream per device (lagged)
        self.n_positions = 0  # valid positions seen so far
        self._refs: Tensor | None = None  # this batch's positions, on the CPU
        self._valid: Tensor | None = None
        self._on: dict[torch.device, tuple[Tensor, Tensor]] = {}  # ... copied to each device
        self._pending: dict[int, Tensor] = {}
        self._pending_bytes = 0

    def set_batch(self, refs: Int[Tensor, " pos"], valid: Bool[Tensor, " pos"]) -> None:
        self.flush()  # anything still pending belongs to the previous batch's positions
        self.n_positions += int(valid.sum())  # counted before the move: no device sync
        self._refs, self._valid = refs, valid
        self._on = {}

    def batch_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(refs, valid) of the current batch on `device`."""
        if device not in self._on:
            self._on[device] = (self._refs.to(device, non_blocking=True), self._valid.to(device, non_blocking=True))
        return self._on[device]

    def _follow(self, layer: int, device: torch.device) -> LayerKeys:
        """The layer's state, moved to `device` if its coefficients come from there."""
        s = self._state[layer]
        if s.coef.device != device:
            s.coef, s.ref, s.active = s.coef.to(device), s.ref.to(device), s.active.to(device)
        return s

    def observe(self, layer: int, coef: Float[Tensor, "batch pos neuron"]) -> None:
        flat = coef.detach().reshape(-1, coef.shape[-1])
        if self.stacked:
            if layer in self._pending:
                self.flush()
            self._pending[layer] = flat
            self._pending_bytes += flat.numel() * flat.element_size()
            if self._pending_bytes > self.max_pending_bytes:
                self.flush()
            return
        s = self._follow(layer, flat.device)
        refs, valid = self.batch_on(flat.device)
        if self.sparse:
            s.coef, s.ref, positive = merge_topk_sparse(s.coef, s.ref, flat, refs, valid, self.signs, fused=self.fused)
        else:
            s.coef, s.ref, positive = merge_topk(s.coef, s.ref, signed(flat, self.signs), refs, valid)
        s.active += positive

    @property
    def state(self) -> dict[int, LayerKeys]:
        """Every layer's running top-k, with everything seen so far merged in."""
        self.drain()
        return self._state

    def flush(self) -> None:
        """Merge the pending layers' coefficients (stacked mode; a no-op otherwise), one stacked
        call per device they are on -- under `lagged`, the previous batch's instead, and this
        one's at the next flush or `drain()`."""
        if not self._pending:
            return
        batch = (dict(self._pending), self._refs, self._valid, {})
        self._pending.clear()
        self._pending_bytes = 0
        if not self.lagged:
            self._merge(batch)
            return
        for flat in batch[0].values():  # the point after which the side stream may read them
            if flat.device.type == "cuda" and flat.device not in batch[3]:
                ev = torch.cuda.Event()
                ev.record(torch.cuda.current_stream(flat.device))
                batch[3][flat.device] = ev
        self._late.append(batch)
        while len(self._late) > 1:
            self._merge(self._late.pop(0))

    def drain(self) -> None:
        """Merge every batch still waiting (lagged) and make the state safe to read on the
        current streams."""
        if self._pending:
            self.flush()
        while self._late:
            self._merge(self._late.pop(0))
        for device, side in self._sides.items():
            torch.cuda.current_stream(device).wait_stream(side)

    def _merge(self, batch) -> None:
        pending, refs, valid, events = batch
        by_device: dict[torch.device, list[int]] = {}
        for layer, flat in pending.items():
            by_device.setdefault(flat.device, []).append(layer)
        for device, layers in by_device.items():
            if device not in events:
                self._flush(device, layers, pending, refs, valid)
                continue
            side = self._sides.setdefault(device, torch.cuda.Stream(device))
            side.wait_event(events[device])
            for layer in layers:  # the allocator must not hand their memory on before the side stream is done
                st = self._state[layer]  # (the state too: the first one, or one loaded, was made on the main stream)
                for t in (pending[layer], st.coef, st.ref, st.active):
                    t.record_stream(side)
            with torch.cuda.stream(side):
                self._flush(device, layers, pending, refs, valid)

    def _flush(self, device: torch.device, layers: list[int], pending: dict[int, Tensor], refs: Tensor,
               valid: Tensor) -> None:  # fmt: skip
        states = [self._follow(layer, device) for layer in layers]
        refs, valid = refs.to(device, non_blocking=True), valid.to(device, non_blocking=True)
        top, ref = torch.stack([s.coef for s in states]), torch.stack([s.ref for s in states])
        if self.sparse:
            stack = torch.stack([pending[layer] for layer in layers])  # our own copy
            fused = device.type == "cuda" if self.fused is None else self.fused
            if not fused:  # masked in place here; the fused scan masks as it reads
                stack.masked_fill_(~valid[None, :, None], 0)
            coef, ref, positive = merge_topk_sparse(top, ref, stack, refs, valid if fused else None, self.signs,
                                                    fused=fused)  # fmt: skip
        else:
            stack = torch.stack([signed(pending[layer], self.signs) for layer in layers])
            coef, ref, positive = merge_topk(top, ref, stack, refs, valid)
        active = torch.stack([s.active for s in states]) + positive
        for i, s in enumerate(states):
            s.coef, s.ref, s.active = coef[i], ref[i], active[i]

    def hooks(self) -> list[tuple[str, object]]:
        def make(layer: int):
            def hook(activation: Tensor, hook=None) -> Tensor:
                self.observe(layer, activation)
                return activation

            return hook

        return [(coefficient_hook(layer), make(layer)) for layer in self.layers]

    # -- checkpointing (plain tensors, so a safetensors file holds the whole state) ----------
    def state_dict(self) -> dict[str, Tensor]:
        self.drain()
        out = {"n_positions": torch.tensor([self.n_positions])}
        for layer, s in self._state.items():
            out[f"{layer}.coef"], out[f"{layer}.ref"], out[f"{layer}.active"] = s.coef, s.ref, s.active
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        self.drain()
        self.n_positions = int(tensors["n_positions"][0])
        for layer, s in self._state.items():
            dev = s.coef.device
            s.coef = tensors[f"{layer}.coef"].to(dev, self.dtype)
            s.ref = tensors[f"{layer}.ref"].to(dev)
            s.active = tensors[f"{layer}.active"].to(dev)
