"""Checkpoints: kill-and-resume equals an uninterrupted run; corrupt checkpoints fail clearly;
`interp.load` opens any checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

import interp
from interp.errors import WorkbenchError
from interp.models.inhouse import native_state_dict
from interp.train import TrainingArguments, latest_checkpoint, list_checkpoints, read_metrics, train


class Killed(Exception):
    pass


def knobs(out, **kw) -> TrainingArguments:
    base = dict(max_steps=6, learning_rate=3e-3, warmup_steps=2, lr_scheduler_type="cosine", eval_steps=0,
                logging_steps=1, save_steps=3, per_device_train_batch_size=4, device="cpu", seed=3, output_dir=str(out))
    return TrainingArguments(**{**base, **kw})


def kill_at(step: int):
    def progress(done, total, message):
        if done == step:
            raise Killed

    return progress


@pytest.fixture(scope="module")
def runs(tiny_session, tmp_path_factory):
    """An uninterrupted 6-step run, and one killed after step 4 then resumed from checkpoint-3."""
    kw = tiny_session
    full_dir, cut_dir = tmp_path_factory.mktemp("full"), tmp_path_factory.mktemp("cut")
    full = train("attn-only-2l", knobs(full_dir), **kw)
    with pytest.raises(Killed):
        train("attn-only-2l", knobs(cut_dir), progress=kill_at(4), **kw)
    assert [p.name for p in list_checkpoints(cut_dir)] == ["checkpoint-3"]
    resumed = train("attn-only-2l", knobs(cut_dir, resume_from_checkpoint="latest"), **kw)
    return full, resumed, full_dir, cut_dir


def test_resume_equals_the_uninterrupted_run(runs):
    full, resumed, full_dir, cut_dir = runs
    assert resumed.global_step == 6
    full_losses = [r["loss"] for r in read_metrics(full_dir)]
    cut_losses = [r["loss"] for r in read_metrics(cut_dir)]
    assert [r["step"] for r in read_metrics(cut_dir)] == [1, 2, 3, 4, 5, 6]  # step 4 of the killed run dropped
    assert cut_losses == full_losses  # bit-for-bit
    a, b = native_state_dict(full.model), native_state_dict(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    lrs = [r["learning_rate"] for r in read_metrics(cut_dir)]
    assert lrs == [r["learning_rate"] for r in read_metrics(full_dir)]


def test_checkpoint_holds_everything_and_opens_with_interp_load(runs):
    full, _, full_dir, _ = runs
    ckpt = latest_checkpoint(full_dir)
    assert ckpt.name == "checkpoint-6"
    names = {p.name for p in ckpt.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "trainer_state.json", "optimizer.pt",
            "scheduler.pt", "rng_state.pt"} <= names
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and state["data_position"] == 6 * 4
    model = interp.load(str(ckpt), device="cpu")
    assert model.info.source == "inhouse" and model.info.n_layers == 2 and model.info.attn_only
    tokens = model.to_tokens("Mary gave a book to John.")
    torch.testing.assert_close(model(tokens), full.model.bridge(tokens))


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    "damage, message",
    [
        ("model.safetensors", "corrupt or truncated"),
        ("optimizer.pt", "corrupt"),
        ("trainer_state.json", "corrupt"),
        ("config.json", "corrupt"),
    ],
)
def test_corrupt_checkpoint_gives_a_clear_error(runs, tmp_path, tiny_corpus, damage, message):
    _, _, full_dir, _ = runs
    ckpt = _copy(full_dir / "checkpoint-3", tmp_path / "checkpoint-3")
    data = (ckpt / damage).read_bytes()
    (ckpt / damage).write_bytes(data[: len(data) // 2])
    with pytest.raises(WorkbenchError, match=message):
        train("attn-only-2l", knobs(tmp_path, resume_from_checkpoint=str(ckpt)), corpus=tiny_corpus)
    if damage in ("model.safetensors", "config.json"):
        with pytest.raises(WorkbenchError):
            interp.load(str(ckpt), device="cpu")


def test_missing_state_file_and_missing_checkpoint(runs, tmp_path, tiny_corpus):
    _, _, full_dir, _ = runs
    ckpt = _copy(full_dir / "checkpoint-3", tmp_path / "checkpoint-3")
    (ckpt / "scheduler.pt").unlink()
    with pytest.raises(WorkbenchError, match="no scheduler.pt"):
        train("attn-only-2l", knobs(tmp_path, resume_from_checkpoint=str(ckpt)), corpus=tiny_corpus)
    with pytest.raises(WorkbenchError, match="no checkpoint-"):
        train("attn-only-2l", knobs(tmp_path / "empty", resume_from_checkpoint="latest"), corpus=tiny_corpus)


def test_resume_refuses_changed_knobs(runs, tiny_corpus):
    _, _, full_dir, _ = runs
    args = knobs(full_dir, resume_from_checkpoint=str(full_dir / "checkpoint-3"), learning_rate=1.0)
    with pytest.raises(WorkbenchError, match="learning_rate"):
        train("attn-only-2l", args, corpus=tiny_corpus)


def test_save_total_limit_keeps_the_newest(tiny, tmp_path):
    train("attn-only-1l", knobs(tmp_path, max_steps=4, save_steps=1, save_total_limit=2), **tiny)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-4"]
