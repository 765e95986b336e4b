"""Token ids as readable labels, for figures and tables.

A byte-level BPE (ours, `interp.train.tokenizer`, and GPT-2's) splits a character of several
UTF-8 bytes across tokens; decoding such a token on its own gives "\\ufffd". `readable_tokens`
reads each token's own bytes instead and writes what is not text on its own as <0xE2>, spaces as
␣, newlines as ↵ and tabs as ⇥, so every label is visible and no two different bytes look alike.

    readable_tokens(tok, tok.encode(" café\\n"))   # ['␣caf', '<0xC3>', '<0xA9>', '↵'] (split as the BPE splits)
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from functools import lru_cache

SPACE, NEWLINE, TAB = "␣", "↵", "⇥"
EMPTY = "∅"  # a token with no bytes
_ERRORS = "interp-byte-labels"
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece's byte fallback


def _hex_bytes(error: UnicodeDecodeError) -> tuple[str, int]:
    """Codec error handler: the bytes that are no UTF-8 text as <0xNN>, one label per byte."""
    bad = error.object[error.start : error.end]
    return "".join(f"<0x{b:02X}>" for b in bad), error.end


codecs.register_error(_ERRORS, _hex_bytes)


@lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level alphabet read backwards: the printable character standing for each byte
    in a byte-level BPE's vocabulary (printable Latin-1 bytes stand for themselves, the other 68
    bytes are shifted to U+0100 and up, in byte order)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in kept]
    return {chr(b): b for b in kept} | {chr(256 + i): b for i, b in enumerate(shifted)}


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return type(decoder).__name__ == "ByteLevel" or hasattr(tokenizer, "byte_decoder")


def shown_text(data: bytes) -> str:
    """One token's bytes as a label: UTF-8 text where it is text, <0xNN> for each byte that is not
    (a piece of a longer character, or a control byte), ␣ for a space, ↵ for a newline, ⇥ for a tab."""
    text = data.decode("utf-8", errors=_ERRORS)
    out = []
    for ch in text:
        if ch == " ":
            out.append(SPACE)
        elif ch == "\n":
            out.append(NEWLINE)
        elif ch == "\t":
            out.append(TAB)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"<0x{ord(ch):02X}>")
        else:
            out.append(ch)
    return "".join(out) or EMPTY


def _special_ids(tokenizer) -> set[int]:
    """Ids shown by their name: special tokens and tokens added beside the learned vocabulary."""
    named = [*getattr(tokenizer, "all_special_ids", ()), *getattr(tokenizer, "added_tokens_decoder", {})]
    return {int(i) for i in named}


def token_bytes(tokenizer, token_id: int, special: set[int] | None = None) -> bytes | None:
    """The bytes a token stands for, or None for a special token (shown by its name)."""
    if int(token_id) in (_special_ids(tokenizer) if special is None else special):
        return None
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if piece is None:
        return b""
    byte_of = _byte_of_char()
    if _is_byte_level(tokenizer) and all(c in byte_of for c in piece):
        return bytes(byte_of[c] for c in piece)
    if m := _BYTE_PIECE.fullmatch(piece):
        return bytes([int(m.group(1), 16)])
    if "▁" in piece:  # SentencePiece's word boundary
        return piece.replace("▁", " ").encode()
    return tokenizer.decode([int(token_id)]).encode()


def readable_tokens(tokenizer, ids: Iterable[int]) -> list[str]:
    """One readable label per token id (see the module docstring): special tokens by their name
    (<|endoftext|>), the rest by `shown_text` of their bytes. Without a tokenizer, the ids."""
    ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
    if tokenizer is None:
        return [str(i) for i in ids]
    special, out = _special_ids(tokenizer), []
    for i in ids:
        data = token_bytes(tokenizer, i, special)
        out.append(tokenizer.convert_ids_to_tokens(i) if data is None else shown_text(data))
    return out
