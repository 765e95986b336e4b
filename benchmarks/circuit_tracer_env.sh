#!/usr/bin/env bash
# A separate venv for circuit-tracer 0.5.0 (issue 26: benchmarks/graphs_vs_circuit_tracer.py runs its
# `attribute` there, in a subprocess). Outside the repo, never mixed with .venv: circuit-tracer wants
# transformers<=4.57.3 and TransformerLens<4 (HookedTransformer), ours runs transformers 5 / TL 4.
#
#   bash benchmarks/circuit_tracer_env.sh [/work/ctvenv]
#
# torch is pinned in the SAME pip command as everything else, so that pip takes the local CPU wheel
# (torch 2.13.0+cpu) and never resolves a multi-GB CUDA build for an unpinned torch.
#
#   bash benchmarks/circuit_tracer_env.sh --carry [.carry-ct]
#
# instead downloads, for the GPU machine (Python 3.12, x86-64, its own torch 2.11 / numpy 2.5.2 /
# transformers 5.17 / huggingface-hub 1.33 / tokenizers 0.23), the wheels of what circuit-tracer's
# side imports there and the image lacks or has in another version, into DIR/whl, and writes
# DIR/setup.sh, which installs them into /tmp/ctsite (run it there; then circuit-tracer's side is
# `python3` with PYTHONPATH=/tmp/ctsite only: benchmarks/graphs_vs_circuit_tracer.py --ct-python python3
# --ct-pythonpath /tmp/ctsite). No torch. numpy 1.26.4 (TransformerLens 2.18 asks numpy<2 on 3.12) is
# tried first and dropped by setup.sh if the image's pandas / pyarrow refuse it.
set -euo pipefail
if [ "${1:-}" = "--carry" ]; then
    DIR="${2:-.carry-ct}"
    mkdir -p "$DIR/whl"
    for p in circuit-tracer==0.5.0 transformers==4.57.3 transformer-lens==2.18.0 nnsight==0.6.3 \
             huggingface_hub==0.36.2 tokenizers==0.22.2 datasets==5.0.1 dill==0.4.1 multiprocess==0.70.19 \
             better-abc==0.0.3 fancy-einsum==0.0.3 typeguard==4.6.1 pydantic==2.14.4 pydantic_core==2.50.5 \
             annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 numpy==1.26.4; do
        "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR/whl" "$p"
    done
    sed -n '/^# --- setup.sh ---$/,$p' "$0" | tail -n +2 > "$DIR/setup.sh"
    du -sh "$DIR"
    exit 0
fi
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
exit 0

# --- setup.sh ---
#!/usr/bin/env bash
# circuit-tracer 0.5.0's side of benchmarks/graphs_vs_circuit_tracer.py on the GPU machine (issue 26):
# installs the wheels in .carry-ct/whl (circuit-tracer 0.5.0, transformers 4.57.3, transformer-lens
# 2.18.0, nnsight 0.6.3, huggingface-hub 0.36.2, tokenizers 0.22.2, datasets 5.0.1, numpy 1.26.4, ...:
# what it imports that the image lacks or has in another version; no torch) into $CTSITE
# (/tmp/ctsite), to be used as `python3` with PYTHONPATH=/tmp/ctsite ONLY, so that they shadow the
# image's transformers 5 etc. Idempotent: a finished, checked install is kept (marker .ok).
# TransformerLens 2.18 asks for numpy<2 on Python 3.12: numpy 1.26.4 is tried first; if the image's
# compiled packages (pyarrow, pandas, ...) refuse it, it is removed and the image's numpy is used.
#
#   bash .carry-ct/setup.sh        # then: PYTHONPATH=/tmp/ctsite python3 benchmarks/circuit_tracer_run.py ...
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SITE="${CTSITE:-/tmp/ctsite}"
PY="${PYTHON:-python3}"

check() {
    env -u PYTHONPATH PYTHONPATH="$SITE" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$PY" - "$SITE" <<'PY'
import sys
from importlib.metadata import version

import numpy as np
import torch

site = sys.argv[1]
t = torch.from_numpy(np.arange(3.0))  # torch's numpy bridge works with this numpy
assert t.numpy().sum() == 3.0
import pandas, pyarrow, datasets  # noqa: E401,F401 - TransformerLens 2 imports datasets (pyarrow, pandas)
import transformers, transformer_lens, circuit_tracer  # noqa: E401,F401
from circuit_tracer import ReplacementModel, attribute  # noqa: F401
from circuit_tracer.transcoder.activation_functions import TopK  # noqa: F401
from circuit_tracer.utils.hf_utils import load_transcoders  # noqa: F401

assert transformers.__version__ == "4.57.3", transformers.__version__
assert transformers.__file__.startswith(site), transformers.__file__
assert version("transformer-lens") == "2.18.0" and version("circuit-tracer") == "0.5.0"
print(f"ctsite ok: circuit-tracer {version('circuit-tracer')}, transformers {transformers.__version__}, "
      f"transformer-lens {version('transformer-lens')}, huggingface-hub {version('huggingface-hub')}, "
      f"numpy {np.__version__} ({'carried' if np.__file__.startswith(site) else 'the image'}), "
      f"torch {torch.__version__}, pyarrow {pyarrow.__version__}, pandas {pandas.__version__}, "
      f"cuda {torch.cuda.is_available()}")
PY
}

if [ -f "$SITE/.ok" ]; then
    echo "ctsite: already installed in $SITE ($(cat "$SITE/.ok"))"
    exit 0
fi
rm -rf "$SITE"
t0=$(date +%s)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$HERE"/whl/*.whl
echo "ctsite: installed $(ls "$HERE"/whl/*.whl | wc -l) wheels into $SITE in $(( $(date +%s) - t0 ))s"
if ! check; then
    if ls -d "$SITE"/numpy >/dev/null 2>&1; then
        echo "ctsite: numpy 1.26.4 does not work with the image's packages here; removing it (the image's numpy then)"
        rm -rf "$SITE"/numpy "$SITE"/numpy-*.dist-info "$SITE"/numpy.libs "$SITE"/bin/f2py
        check
    else
        exit 1
    fi
fi
env -u PYTHONPATH PYTHONPATH="$SITE" "$PY" -c 'import numpy; print("numpy", numpy.__version__)' > "$SITE/.ok"
