"""apps/state.py outside the page: concurrent sessions share one model safely; checkpoint discovery."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from apps import state


def test_concurrent_forward_passes_do_not_mix(tiny_llama_dir):
    """Hooks live on the shared model: without the run lock, threads read each other's patterns
    (tried: most of these mismatch); with it every result matches its own prompt."""
    spec = str(tiny_llama_dir)
    state.get_model(spec)
    prompts = [" ".join(["word"] * n) + f" {n}" for n in range(2, 26)]

    def work(prompt: str) -> bool:
        patterns, tokens = state.layer_patterns(spec, prompt, 1)
        return patterns.shape[-1] == patterns.shape[-2] == len(tokens)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, prompts))


def test_discovers_inhouse_checkpoints_and_runs(tiny_run):
    found = state.discover_checkpoints(tiny_run.parent)
    assert found == [str(tiny_run / "checkpoint-10"), str(tiny_run / "checkpoint-20")]
    assert state.discover_runs(tiny_run.parent) == [str(tiny_run)]
    assert state.discover_checkpoints(tiny_run / "missing") == []


def test_stopped_early_patterns_match_a_full_cached_pass(tiny_llama):
    import numpy as np
    import torch

    tokens = tiny_llama.to_tokens("one two three one two three")
    logits_before = tiny_llama(tokens)
    _, cache = tiny_llama.run_with_cache(tokens)
    for layer in range(tiny_llama.info.n_layers):
        np.testing.assert_allclose(state._patterns(tiny_llama, tokens, layer),
                                   cache[f"blocks.{layer}.attn.hook_pattern"][0].numpy(), atol=1e-6)
    torch.testing.assert_close(tiny_llama(tokens), logits_before)  # no hook left behind by the stop


def test_server_threads_and_dtype_come_from_the_environment(tmp_path):
    """INTERP_TORCH_THREADS sets torch's intra-op threads when the dashboard starts (the benchmark's
    --threads); INTERP_DTYPE is the dtype models are loaded in (its --dtype)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = "import torch; torch.set_num_threads(2); from apps import state; print(torch.get_num_threads(), state.DTYPE)"
    env = {**os.environ, "PYTHONPATH": str(root), "INTERP_TORCH_THREADS": "1", "INTERP_DTYPE": "bfloat16"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.stdout.split() == ["1", "bfloat16"], out.stderr[-2000:]
