"""How the `interp` command asks the C library for memory.

glibc's malloc serves every allocation above its mmap threshold (which it never raises past 32 MB) with
a fresh mmap and returns it to the system on free, so each large temporary tensor is page-faulted and
zeroed anew. The engines here make many such temporaries (a batch of patched variants through an MLP is
hundreds of MB): `interp ioi --n-prompts 24` on the 2-core CPU took 19.9M page faults and 37 s of system
time for 239 s of user time (2026-12-07). `keep_freed_memory` makes malloc take large blocks from its
heap too and keep what is freed for the next allocation (mallopt: M_MMAP_MAX 0, M_TRIM_THRESHOLD off):
the same run then took 0.6M page faults, 3 s of system time and 17 s less wall time, for about 20% more
peak memory. Only the `interp` command calls it (interp.cli.entry): library use, the tests and the
dashboard keep the C library's defaults. INTERP_MALLOC=default turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt's parameter numbers (glibc malloc.h)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve large blocks from its heap and keep freed memory (module docstring).
    True when it was done; False where the C library is not glibc or INTERP_MALLOC=default."""
    if os.environ.get("INTERP_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
