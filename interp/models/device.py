"""Device and dtype selection with sane defaults (CUDA when present, float32 unless asked)."""

from __future__ import annotations

import os

import torch

from interp.errors import WorkbenchError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """`None`/"auto" -> cuda if available else cpu; anything else must exist on this machine."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise WorkbenchError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise WorkbenchError(f"device {device!r} requested but CUDA is not available here; use device 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise WorkbenchError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise WorkbenchError(f"device {device!r} requested but Apple's MPS is not available here; use device 'cpu'")
    elif dev.type != "cpu":
        raise WorkbenchError(f"device {device!r} is not supported; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'")
    return dev


def pick_dtype(dtype: str | torch.dtype | None = None) -> torch.dtype:
    """`None` -> float32 (exact interpretability numbers); strings like 'bf16' accepted."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise WorkbenchError(f"unknown dtype {dtype!r}; choose one of {sorted(set(DTYPES))}") from None


def available_bytes(device: torch.device) -> int | None:
    """Free memory on `device`: free GPU memory on CUDA, available RAM on the CPU (psutil when
    installed, else the free pages), None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
