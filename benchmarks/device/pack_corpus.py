"""Pack a token store (tok-.../ with {train,heldout}.{tokens,docs} + manifest.json) for travel:
uint32 tokens -> uint16 -> xz, split over carry folders of at most MAX_MB each.
usage: python pack_corpus.py STORE_DIR OUT_ROOT [MAX_MB=45] [--subset-train-tokens N --seed S]"""
import hashlib
import json
import lzma
import sys
from pathlib import Path

import numpy as np

store, out_root = Path(sys.argv[1]), Path(sys.argv[2])
max_mb = float(sys.argv[3]) if len(sys.argv) > 3 and not sys.argv[3].startswith("--") else 45.0
subset = int(sys.argv[sys.argv.index("--subset-train-tokens") + 1]) if "--subset-train-tokens" in sys.argv else 0
seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 0
sha = lambda b: hashlib.sha256(b).hexdigest()

blobs = {}   # logical name -> bytes
final = {}   # final store file -> {sha256, size}
manifest = json.loads((store / "manifest.json").read_text())
for split in ("train", "heldout"):
    tok = np.fromfile(store / f"{split}.tokens", dtype=np.uint32)
    off = np.fromfile(store / f"{split}.docs", dtype=np.int64)
    assert off[0] == 0 and off[-1] == len(tok)
    if split == "train" and subset and subset < len(tok):
        lengths = np.diff(off)
        order = np.random.default_rng(seed).permutation(len(lengths))
        keep = np.sort(order[: int(np.searchsorted(np.cumsum(lengths[order]), subset)) + 1])
        tok = np.concatenate([tok[off[i]:off[i + 1]] for i in keep])
        off = np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64)
        manifest["subset"] = {"train_tokens": int(len(tok)), "train_docs": int(len(keep)), "seed": seed,
                              "original_train_tokens": int(manifest["tokens"]["train"])}
    assert int(tok.max(initial=0)) < 65536
    final[f"{split}.tokens"] = {"sha256": sha(tok.tobytes()), "size": tok.nbytes}
    final[f"{split}.docs"] = {"sha256": sha(off.tobytes()), "size": off.nbytes}
    print(split, len(tok), "tokens", len(off) - 1, "docs", flush=True)
    blobs[f"{split}.u16.xz"] = lzma.compress(tok.astype(np.uint16).tobytes(), preset=9 | lzma.PRESET_EXTREME)
    blobs[f"{split}.docs.xz"] = lzma.compress(off.tobytes(), preset=9)
    print(split, "xz", len(blobs[f"{split}.u16.xz"]), "bytes", round(len(blobs[f"{split}.u16.xz"]) / len(tok), 3), "B/token", flush=True)
mbytes = json.dumps(manifest, indent=1).encode() if "subset" in manifest else (store / "manifest.json").read_bytes()
final["manifest.json"] = {"sha256": sha(mbytes), "size": len(mbytes)}
blobs["manifest.json"] = mbytes

# cut everything into pieces, filling folder c1, c2, ... up to max_mb each
cap = int(max_mb * 1e6) - 200_000  # room for index.json
folders, cur, room = [[]], 0, cap
pieces = {}
for name, data in blobs.items():
    pos, k = 0, 0
    pieces[name] = {"sha256": sha(data), "size": len(data), "parts": []}
    while pos < len(data):
        if room == 0:
            folders.append([]); room = cap
        n = min(room, len(data) - pos)
        pname = f"{name}.p{k:02d}"
        folders[-1].append((pname, data[pos:pos + n]))
        pieces[name]["parts"].append(pname)
        pos += n; room -= n; k += 1
index = {"store": store.name, "corpus": store.parent.name, "blobs": pieces, "final": final,
         "folders": [f".carry-c{i + 1}" for i in range(len(folders))]}
for i, files in enumerate(folders):
    d = out_root / f".carry-c{i + 1}"
    d.mkdir(parents=True, exist_ok=True)
    for old in d.iterdir():
        old.unlink()
    for pname, data in files:
        (d / pname).write_bytes(data)
    (d / "index.json").write_text(json.dumps(index, indent=1))
    print(d, sum(len(x) for _, x in files), "bytes")
