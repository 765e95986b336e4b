"""An output folder belongs to one run: a rerun over its checkpoints is refused unless it resumes
or overwrites, a killed save's leftovers are cleared, a full disk gives a one-line error and
leaves nothing behind, and a micro-batch that cannot fit is refused before any work."""

from __future__ import annotations

import errno
import tempfile

import pytest
import torch
from cli_helpers import error_line

from interp.cli import main
from interp.errors import WorkbenchError
from interp.models.inhouse import NativeSpec
from interp.train import TrainingArguments, list_checkpoints, read_metrics, train
from interp.train.checkpoints import OutputDirInUse
from interp.train.log import MetricsLog
from interp.train.memory import check_fits, logits_bytes, micro_batch_bytes


def knobs(out, **kw) -> TrainingArguments:
    base = dict(max_steps=2, warmup_steps=0, eval_steps=0, logging_steps=1, save_steps=2,
                per_device_train_batch_size=2, device="cpu", output_dir=str(out))
    return TrainingArguments(**{**base, **kw})


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def temporaries(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def cli(tiny: dict, out, *extra: str) -> list[str]:
    """`interp train` argv for a test-sized run (the `tiny` fixture's corpus and architecture)."""
    arch = [f"--arch={k}={v}" for k, v in tiny["arch"].items()]
    return ["train", "--preset", "attn-only-1l", "--corpus", tiny["corpus"], *arch, "--max_steps", "2", "--warmup_steps", "0",
            "--eval_steps", "0", "--logging_steps", "1", "--save_steps", "2", "--per_device_train_batch_size", "2",
            "--device", "cpu", "--output_dir", str(out), *extra]



def test_a_rerun_over_checkpoints_is_refused_naming_both_ways_out(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli(tiny, out)) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}
    capsys.readouterr()
    assert main(cli(tiny, out)) == 2
    line = error_line(capsys)
    assert "already holds checkpoints (newest: checkpoint-2)" in line
    assert "--resume_from_checkpoint latest" in line and "--overwrite_output_dir" in line
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing touched
    # the library says the same in its own words
    with pytest.raises(OutputDirInUse, match="resume_from_checkpoint='latest'.*overwrite_output_dir=True"):
        train("attn-only-1l", knobs(out), **tiny)


def test_overwrite_output_dir_clears_the_old_run_first(tiny, tmp_path):
    train("attn-only-1l", knobs(tmp_path, max_steps=4, save_steps=1), **tiny)
    assert [p.name for p in list_checkpoints(tmp_path)] == [f"checkpoint-{s}" for s in (1, 2, 3, 4)]
    (tmp_path / "notes.txt").write_text("mine")
    result = train("attn-only-1l", knobs(tmp_path, overwrite_output_dir=True), **tiny)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2"]
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2] == [r["step"] for r in result.metrics]
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only the run's own files go
    assert temporaries(tmp_path) == []
    with pytest.raises(WorkbenchError, match="overwrite_output_dir deletes the checkpoints"):
        train("attn-only-1l", knobs(tmp_path, overwrite_output_dir=True, resume_from_checkpoint="latest"), **tiny)


def test_a_killed_saves_leftovers_are_cleared_on_resume_and_on_a_fresh_start(tiny, tmp_path):
    train("attn-only-1l", knobs(tmp_path), **tiny)
    # what a kill during the save of checkpoint-4 and during a rewrite of metrics.jsonl leaves
    half = tempfile.mkdtemp(prefix=".checkpoint-4.tmp-", dir=tmp_path)
    (tmp_path / half / "optimizer.pt").write_bytes(b"\0" * 10)
    tempfile.mkstemp(prefix=".metrics.jsonl.tmp-", dir=tmp_path)
    assert len(temporaries(tmp_path)) == 2
    train("attn-only-1l", knobs(tmp_path, max_steps=4, resume_from_checkpoint="latest"), **tiny)
    assert temporaries(tmp_path) == []
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4"]

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    tempfile.mkdtemp(prefix=".checkpoint-2.tmp-", dir=fresh)  # killed before its first checkpoint
    train("attn-only-1l", knobs(fresh), **tiny)
    assert temporaries(fresh) == [] and [p.name for p in list_checkpoints(fresh)] == ["checkpoint-2"]


def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_leaves_nothing(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("interp.models.inhouse.save_file", disk_full)
    out = tmp_path / "run"
    assert main(cli(tiny, out)) == 2
    line = error_line(capsys)
    assert f"no space left on '{out / 'checkpoint-2'}'" in line
    assert list_checkpoints(out) == [] and temporaries(out) == []
    assert [r["step"] for r in read_metrics(out)] == [1, 2]  # the log of the steps that did run


def test_a_full_disk_while_logging_is_one_line(tmp_path, monkeypatch):
    log = MetricsLog.start(tmp_path, step=0)
    monkeypatch.setattr("interp.train.log.open", disk_full, raising=False)
    with pytest.raises(WorkbenchError, match="no space left on .*metrics.jsonl"):
        log.append({"step": 1, "loss": 1.0})


def test_resuming_from_a_file_says_it_is_a_file(tiny, tmp_path, capsys):
    afile = tmp_path / "trainer_state.json"
    afile.write_text("{}")
    with pytest.raises(WorkbenchError, match="is a file, not a checkpoint folder"):
        train("attn-only-1l", knobs(tmp_path / "run", resume_from_checkpoint=str(afile)), **tiny)
    assert main(cli(tiny, tmp_path / "run", "--resume_from_checkpoint", str(afile))) == 2
    assert "is a file, not a checkpoint folder" in error_line(capsys)
    assert not (tmp_path / "run").exists()
    with pytest.raises(WorkbenchError, match="does not exist"):
        train("attn-only-1l", knobs(tmp_path / "run", resume_from_checkpoint=str(tmp_path / "nope")), **tiny)


@pytest.mark.parametrize("where", ["a file", "under a file", "/proc"])
def test_an_output_dir_that_cannot_be_written_is_refused_first(tiny, tmp_path, capsys, where, monkeypatch):
    afile = tmp_path / "taken"
    afile.write_text("x")
    out = {"a file": afile, "under a file": afile / "run", "/proc": "/proc/interp-train-run"}[where]
    monkeypatch.setattr("interp.train.run.make_tokenizer", None)  # would fail loudly if reached: nothing may start
    assert main(cli(tiny, out)) == 2
    line = error_line(capsys)
    assert str(out) in line and ("is a file" in line or "lies under" in line or "cannot write" in line), line
    assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_a_micro_batch_that_cannot_fit_is_refused_before_any_work(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("interp.train.run.build_native", None)  # nothing may be built
    out = tmp_path / "run"
    assert main(cli(tiny, out, "--per_device_train_batch_size", "1000000000")) == 2
    line = error_line(capsys)
    assert "a micro-batch of 1000000000 sequences x 32 tokens needs at least" in line
    assert "lower per_device_train_batch_size" in line and "gradient_accumulation_steps" in line
    assert not out.exists()


def test_the_memory_bound_counts_logits_and_activations(monkeypatch):
    spec = NativeSpec(n_layers=2, d_model=32, n_heads=2, d_head=16, n_ctx=32, d_vocab=300, attn_only=True)
    assert logits_bytes(spec, 3) == 2 * 3 * 32 * 300 * 4
    assert micro_batch_bytes(spec, 3) == logits_bytes(spec, 3) + 3 * 32 * 2 * (2 * 32 + 4 * 2 * 16) * 4
    with_mlp = NativeSpec(n_layers=2, d_model=32, n_heads=2, d_head=16, n_ctx=32, d_vocab=300, d_mlp=64)
    assert micro_batch_bytes(with_mlp, 3) - micro_batch_bytes(spec, 3) == 3 * 32 * 2 * (2 * 64) * 4
    cpu = torch.device("cpu")
    check_fits(spec, 8, cpu)  # a real tiny batch fits the real machine
    need = micro_batch_bytes(spec, 8)
    monkeypatch.setattr("interp.models.device.available_bytes", lambda device: need)
    check_fits(spec, 8, cpu)  # exactly enough
    with pytest.raises(WorkbenchError, match="lower per_device_train_batch_size"):
        check_fits(spec, 9, cpu)
    with pytest.raises(WorkbenchError, match="for each of 2 processes"):
        check_fits(spec, 8, cpu, processes=2)  # two data-parallel ranks share the CPU's memory
    monkeypatch.setattr("interp.models.device.available_bytes", lambda device: None)
    check_fits(spec, 10**9, cpu)  # unknown free memory: no refusal


def test_a_kill_during_an_overwrite_leaves_nothing_to_resume(tiny, tmp_path, monkeypatch):
    """Issue 28: an overwrite killed while deleting the old run's checkpoints once left the newest
    of them, which `latest` then resumed. The old names are voided before any deletion; the next
    start finishes the deletion."""
    import interp.train.checkpoints as ckpt

    train("attn-only-1l", knobs(tmp_path, max_steps=3, save_steps=1), **tiny)
    real, calls = ckpt._discard, []

    def killed_after_one(folder):
        if calls:
            raise KeyboardInterrupt  # the kill, after the first checkpoint went
        calls.append(folder.name)
        real(folder)

    monkeypatch.setattr(ckpt, "_discard", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        train("attn-only-1l", knobs(tmp_path, overwrite_output_dir=True), **tiny)
    assert calls == ["checkpoint-1"] and (tmp_path / "checkpoint-3").is_dir()  # the newest is still on disk...
    assert list_checkpoints(tmp_path) == []  # ...but is no checkpoint of this folder any more
    with pytest.raises(WorkbenchError, match="no checkpoint-\\* folder"):
        train("attn-only-1l", knobs(tmp_path, resume_from_checkpoint="latest"), **tiny)
    monkeypatch.setattr(ckpt, "_discard", real)
    train("attn-only-1l", knobs(tmp_path), **tiny)  # a new run starts and finishes the deletion
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-2"]
    assert not (tmp_path / ckpt.VOID).exists() and temporaries(tmp_path) == []


def test_resuming_with_another_architecture_is_refused(tiny, tmp_path, capsys):
    """Issue 28: `--arch d_model=... --resume_from_checkpoint latest` resumed the old architecture
    silently; it is refused naming both values, and the same --arch resumes."""
    out = tmp_path / "run"
    assert main(cli(tiny, out)) == 0
    d_model = tiny["arch"]["d_model"]
    resume = ["--resume_from_checkpoint", "latest", "--max_steps", "3"]
    assert main(cli(tiny, out, *resume, f"--arch=d_model={2 * d_model}")) == 2
    line = error_line(capsys)
    assert f"d_model={2 * d_model}, the checkpoint has {d_model}" in line and "drop those --arch" in line
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2"]
    assert main(cli(tiny, out, *resume)) == 0 and [p.name for p in list_checkpoints(out)][-1] == "checkpoint-3"
