#!/usr/bin/env bash
# A separate venv for circuit-tracer 0.5.0 (issue 26: benchmarks/graphs_vs_circuit_tracer.py runs its
# `attribute` there, in a subprocess). Outside the repo, never mixed with .venv: circuit-tracer wants
# transformers<=4.57.3 and TransformerLens<4 (HookedTransformer), ours runs transformers 5 / TL 4.
#
#   bash benchmarks/circuit_tracer_env.sh [/work/ctvenv]
#
# torch is pinned in the SAME pip command as everything else, so that pip takes the local CPU wheel
# (torch 2.13.0+cpu) and never resolves a multi-GB CUDA build for an unpinned torch.
set -euo pipefail
VENV="${1:-/work/ctvenv}"
PYTHON="${PYTHON:-python3}"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q \
    torch==2.13.0 \
    circuit-tracer==0.5.0 \
    transformers==4.57.3 \
    transformer-lens==2.18.0 \
    nnsight==0.6.3 \
    "pyarrow<22"  # TransformerLens 2.x keeps numpy<2; newer pyarrow needs numpy 2
"$VENV/bin/python" - <<'PY'
import torch, transformers, transformer_lens, circuit_tracer  # noqa: F401
from importlib.metadata import version
print("circuit-tracer", version("circuit-tracer"), "| torch", torch.__version__, "| transformers",
      transformers.__version__, "| transformer-lens", version("transformer-lens"), "| cuda", torch.version.cuda)
assert torch.version.cuda is None, "a CUDA build of torch got in; remove the venv and run again"
PY
