"""The positions a replay computes (`Span`: per prompt from a start to its END, and where the metric
reads), and the per-prompt gather along positions: the window vocabulary every replayed engine shares
(re-exported by interp.circuits.replay)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor


def gather_pos(x: Float[Tensor, "batch pos ..."], idx: Int[Tensor, "batch win"]) -> Float[Tensor, "batch win ..."]:
    """x[b, idx[b, w]] for every prompt b (a per-prompt gather along positions)."""
    view = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(*idx.shape, *x.shape[2:])
    return x.gather(1, view)


@dataclass
class Span:
    """The positions a replay computes: per prompt from `start` to its END, padded to a common width
    (padding entries repeat the last position; a real position never reads them)."""

    pos: Int[Tensor, "batch win"]  # absolute position of each window entry
    start: Int[Tensor, "batch"]
    end: Int[Tensor, "batch"]
    before: int | None = None  # the largest start (how many positions of a base run's keys can be read)
    reads: Int[Tensor, "batch"] | Int[Tensor, "batch read"] | None = None  # where the metric reads (Task.reads;
    # None: END), each at most END; the last block computes them alone

    @classmethod
    def of(cls, start: Int[Tensor, "batch"], end: Int[Tensor, "batch"], n_pos: int, reads: Tensor | None = None) -> Span:
        """From `start` (moved back to the first read where one lies before it) to END."""
        start = torch.minimum(start.to(end.device), end)
        if reads is not None:
            start = torch.minimum(start, reads_2d(reads.to(end.device)).amin(1))
        width = int((end - start).max()) + 1
        pos = (start[:, None] + torch.arange(width, device=end.device)[None]).clamp(max=n_pos - 1)
        return cls(pos, start, end, int(start.max()), reads)

    @classmethod
    def whole(cls, end: Int[Tensor, "batch"], n_pos: int, reads: Tensor | None = None) -> Span:
        """Every position 0..n_pos-1 of every prompt."""
        pos = torch.arange(n_pos, device=end.device).expand(len(end), n_pos)
        return cls(pos, torch.zeros_like(end), end, 0, reads)

    @property
    def width(self) -> int:
        return self.pos.shape[1]

    @property
    def at_end(self) -> Int[Tensor, "batch"]:
        """Each prompt's END as an index into its window."""
        return self.end - self.start

    @property
    def rows(self) -> Int[Tensor, "batch read"]:
        """The metric's read positions as indices into each prompt's window ([batch 1]: END alone)."""
        if self.reads is None:
            return self.at_end[:, None]
        return reads_2d(self.reads.to(self.start.device)) - self.start[:, None]

    def readout(self, x: Float[Tensor, "variant batch read d_model"]) -> Tensor:
        """x at the read rows as a metric takes it: [variant batch d_model] for one read position,
        [variant batch read d_model] for several."""
        return x[:, :, 0] if self.reads is None or self.reads.dim() == 1 else x

    def to(self, device) -> Span:
        return Span(self.pos.to(device), self.start.to(device), self.end.to(device), self.before,
                    None if self.reads is None else self.reads.to(device))  # fmt: skip


def reads_2d(reads: Tensor) -> Int[Tensor, "batch read"]:
    """Read positions as [batch read] (one position per prompt, [batch], as [batch 1])."""
    return reads[:, None] if reads.dim() == 1 else reads
