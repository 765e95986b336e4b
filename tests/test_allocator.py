"""The `interp` command's allocator setting (interp.allocator): large freed blocks are reused, not faulted
in anew; each case runs in a subprocess so the test process keeps the C library's defaults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHURN = """
import resource, sys, torch
from interp.allocator import keep_freed_memory
done = keep_freed_memory() if sys.argv[1] == "keep" else False
x = torch.ones(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(60):
    x = torch.ones(64 * 2**20 // 4) + x[:1]  # a fresh 64 MB block each time, the last one freed
print(done, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(mode: str, **env) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()  # fmt: skip
    return out[0], int(out[1])


def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    done, kept = _run("keep")
    _, default = _run("default")
    assert done == "True"
    # 60 rounds of 64 MB blocks: ~16k pages each faulted anew by default; when kept, the first few only
    assert default > 40 * 16_000 and kept < default / 4


def test_interp_malloc_default_turns_it_off():
    done, _ = _run("keep", INTERP_MALLOC="default")
    assert done == "False"
