"""Fixtures for the dashboard tests: a tiny training run with in-house checkpoints, a tiny memory
index, and a hand-written circuit.json, all built in seconds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # dashboard_helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the apps package


@pytest.fixture(autouse=True)
def runs_folder(tmp_path, monkeypatch) -> Path:
    """Each test's own runs folder (INTERP_RUNS_DIR): the results a view saves never land in ./runs."""
    folder = tmp_path / "runs"
    monkeypatch.setenv("INTERP_RUNS_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """runs/tiny/ with metrics.jsonl and checkpoint-10, checkpoint-20 (attention-only, 2 layers)."""
    from interp.models.inhouse import NativeSpec, build_native, save_inhouse
    from interp.models.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    run = tmp_path_factory.mktemp("runs") / "tiny"
    records = []
    for seed, step in enumerate((10, 20)):
        spec = NativeSpec(n_layers=2, d_model=32, n_heads=4, d_head=8, n_ctx=64, d_vocab=len(tok), attn_only=True,
                          seed=seed)
        save_inhouse(build_native(spec, tok), spec, run / f"checkpoint-{step}")
        records.append({"step": step, "loss": 9.0 - seed, "eval_loss": 9.1 - seed, "icl_score": -0.1 * seed,
                        "induction_score": 0.1 + 0.3 * seed, "prev_token_score": 0.2})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


@pytest.fixture(scope="session")
def tiny_index(tiny_llama, tmp_path_factory) -> Path:
    from interp.memories import IndexSettings, build_index

    out = tmp_path_factory.mktemp("memories") / "index"
    build_index(tiny_llama, IndexSettings(n_tokens=512, seq_len=32, top_k=5, shard_tokens=512, n_permutations=100), out)
    return out


@pytest.fixture(scope="session")
def tiny_circuit(tmp_path_factory) -> Path:
    """A circuit.json as `interp ioi` writes it, naming heads a 2-layer, 4-head model has."""
    path = tmp_path_factory.mktemp("ioi") / "circuit.json"
    path.write_text(json.dumps({"model": "tiny", "classes": {"name mover": [[1, 2], [1, 0]], "s-inhibition": [[0, 3]]},
                                "faithfulness": 0.8, "clean_logit_diff": 3.0, "corrupted_logit_diff": -0.5}))
    return path
