"""Data-parallel training through torchrun on CPU (gloo): 2 processes x batch 2 train exactly
like one process with batch 4, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from interp.errors import WorkbenchError
from interp.train import TrainingArguments
from interp.train.distributed import setup

ARCH = ["--arch", "d_model=32", "--arch", "n_heads=2", "--arch", "d_head=16", "--arch", "n_ctx=32",
        "--arch", "vocab_size=300"]


def cli_train(corpus: str, out, batch: int, processes: int, *extra: str) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_port", str(29500 + os.getpid() % 1000)] if processes > 1 else [sys.executable]
    cmd = launcher + ["-m", "interp.cli", "train", "--preset", "attn-only-2l", "--corpus", corpus, *ARCH,
                      "--max_steps", "4", "--warmup_steps", "0", "--per_device_train_batch_size", str(batch),
                      "--eval_steps", "2", "--save_steps", "2", "--logging_steps", "1", "--device", "cpu",
                      "--seed", "5", "--output_dir", str(out),
                      # Adam's first steps are ~lr * sign(grad): with the default eps a gradient entry near
                      # zero flips on float rounding; a larger eps keeps the comparison well-conditioned
                      "--adam_epsilon", "1e-3", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_global_batch(tiny_corpus, tmp_path):
    single = cli_train(tiny_corpus, tmp_path / "one", batch=4, processes=1)
    assert single.returncode == 0, single.stderr[-2000:]
    pair = cli_train(tiny_corpus, tmp_path / "two", batch=2, processes=2)
    assert pair.returncode == 0, pair.stderr[-2000:]

    for step in (2, 4):
        a = load_file(tmp_path / "one" / f"checkpoint-{step}" / "model.safetensors")
        b = load_file(tmp_path / "two" / f"checkpoint-{step}" / "model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], atol=2e-5, rtol=1e-4)
    one = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in two] == [r["step"] for r in one]  # rank 0 alone logged, once per step
    for x, y in zip(one, two):
        if "loss" in x:
            assert y["loss"] == pytest.approx(x["loss"], abs=1e-4)  # the mean over both processes' halves
    state = json.loads((tmp_path / "two" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["data_position"] == 4 * 4 and state["args"]["n_devices"] == 2

    # kill after step 2 (keep checkpoint-2 only) and resume with two processes: the same weights
    shutil.copytree(tmp_path / "two", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoint-4")
    resumed = cli_train(tiny_corpus, tmp_path / "cut", 2, 2, "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(tmp_path / "two" / "checkpoint-4" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoint-4" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-5)


def test_n_devices_needs_one_process_per_device(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert setup(1, torch.device("cpu")) is None
    with pytest.raises(WorkbenchError, match="torchrun --nproc_per_node 2"):
        setup(2, torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(WorkbenchError, match="torchrun started 2 processes"):
        setup(4, torch.device("cpu"))
    assert TrainingArguments(n_devices=2, per_device_train_batch_size=3, gradient_accumulation_steps=2).effective_batch_size == 12
