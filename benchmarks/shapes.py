"""Random-weight Llama-shaped models of a given size, built straight on the device (no hub, no
weights on disk), for speed and memory work at scales the offline model does not reach.

    from shapes import SHAPES, build
    model = build("8b", device="cuda", dtype="bf16", tokenizer="path/to/tokenizer")

Shapes (only the shape is theirs; weights are HF's random initialisation):
  135m  SmolLM2-135M: 30 layers, d_model 576, 9 query / 3 KV heads, d_mlp 1536, tied embeddings
  1.7b  SmolLM2-1.7B: 24 layers, d_model 2048, 32 / 32 heads (MHA), d_mlp 8192, tied embeddings
  8b    Llama-3-8B:   32 layers, d_model 4096, 32 / 8 heads, d_mlp 14336, untied, SmolLM2's vocabulary
  tiny  2 layers, d_model 64, 4 / 2 heads, d_mlp 128 (smoke runs on a CPU)
The tokenizer (default: SmolLM2's, from the workbench cache, else GPT-2's) sets the vocabulary.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

SHAPES: dict[str, dict] = {
    "135m": dict(num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                 intermediate_size=1536, tie_word_embeddings=True, rope_theta=100000.0),
    "1.7b": dict(num_hidden_layers=24, hidden_size=2048, num_attention_heads=32, num_key_value_heads=32,
                 intermediate_size=8192, tie_word_embeddings=True, rope_theta=130000.0),
    "8b": dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=14336, tie_word_embeddings=False, rope_theta=500000.0),
    # for smoke runs of benchmarks/scale.py --quick on a CPU (seconds)
    "tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, tie_word_embeddings=True, rope_theta=10000.0),
}


def default_tokenizer_dir() -> Path:
    """SmolLM2's tokenizer from the workbench cache (any converted GGUF folder), else GPT-2's."""
    from interp.models.cache import cache_dir

    for folder in sorted((cache_dir() / "gguf").glob("SmolLM2-135M*")):
        if (folder / "tokenizer.json").is_file():
            return folder
    from interp.models.tokenizers import gpt2_tokenizer_dir

    return gpt2_tokenizer_dir()


def llama_config(shape: str | dict, vocab_size: int, **overrides):
    """A LlamaConfig of a named shape (or a dict of its fields), with overrides (e.g. num_hidden_layers)."""
    from transformers import LlamaConfig

    fields = dict(SHAPES[shape]) if isinstance(shape, str) else dict(shape)
    fields.update(overrides)
    return LlamaConfig(vocab_size=vocab_size, max_position_embeddings=4096, rms_norm_eps=1e-5,
                       hidden_act="silu", **fields)


@torch.no_grad()
def build(shape: str | dict, device: str = "cuda", dtype: str = "bf16", tokenizer: str | Path | None = None,
          name: str | None = None, **overrides):
    """A random-weight `interp.models.Model` of `shape`, initialised on `device` in `dtype`."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from interp.models.device import pick_device, pick_dtype
    from interp.models.load import from_hf

    dev, dt = pick_device(device), pick_dtype(dtype)
    tok_dir = Path(tokenizer) if tokenizer else default_tokenizer_dir()
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    config = llama_config(shape, len(tok), **overrides)
    folder = Path(tempfile.mkdtemp(prefix="shape-"))
    config.save_pretrained(folder)  # the bridge reads the architecture from config.json; no weights written
    tok.save_pretrained(folder)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dt)
    try:
        with torch.device(dev):
            torch.manual_seed(0)
            hf = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    hf.eval()
    label = name or (shape if isinstance(shape, str) else "custom")
    return from_hf(hf, folder, tok, f"random-{label}", "random", str(folder))


def n_params(model) -> int:
    return sum(p.numel() for p in model.bridge.original_model.parameters())
