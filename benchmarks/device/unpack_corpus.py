"""Rebuild the token store from the pieces in PARTS_DIR (copied there from .carry-c*/) into
CACHE/corpora/<corpus>/<store>/ once every piece is present. Prints one status word:
'ready' (store in place), 'waiting' (pieces missing), 'none' (no index.json)."""
import hashlib
import json
import lzma
import os
import shutil
import sys
from pathlib import Path

parts, cache = Path(sys.argv[1]), Path(sys.argv[2])
if not (parts / "index.json").is_file():
    print("none"); sys.exit(0)
index = json.loads((parts / "index.json").read_text())
dest = cache / "corpora" / index["corpus"] / index["store"]
if (dest / "manifest.json").is_file():
    print("ready"); sys.exit(0)
missing = [p for b in index["blobs"].values() for p in b["parts"] if not (parts / p).is_file()]
if missing:
    print(f"corpus: {len(missing)} pieces missing: {missing[:4]}", file=sys.stderr)
    print("waiting"); sys.exit(0)
import numpy as np

sha = lambda b: hashlib.sha256(b).hexdigest()
blobs = {}
for name, b in index["blobs"].items():
    data = b"".join((parts / p).read_bytes() for p in b["parts"])
    if len(data) != b["size"] or sha(data) != b["sha256"]:
        sys.exit(f"corpus piece {name} is corrupt (size {len(data)} vs {b['size']})")
    blobs[name] = data
tmp = dest.parent / f".{dest.name}.tmp{os.getpid()}"
shutil.rmtree(tmp, ignore_errors=True)
tmp.mkdir(parents=True)
out = {}
for split in ("train", "heldout"):
    out[f"{split}.tokens"] = np.frombuffer(lzma.decompress(blobs.pop(f"{split}.u16.xz")), dtype=np.uint16).astype(np.uint32).tobytes()
    out[f"{split}.docs"] = lzma.decompress(blobs.pop(f"{split}.docs.xz"))
out["manifest.json"] = blobs.pop("manifest.json")
for name, data in out.items():
    want = index["final"][name]
    if len(data) != want["size"] or sha(data) != want["sha256"]:
        sys.exit(f"rebuilt {name} does not match the original (size {len(data)} vs {want['size']})")
    (tmp / name).write_bytes(data)
    del data
if dest.exists():  # a leftover without manifest.json
    shutil.rmtree(dest)
os.replace(tmp, dest)
print("ready")
