"""A full disk is a one-line error naming the path (exit 2), and leaves no half-written file or
temporary behind: training, index builds, `heads --out/--plot`, the IOI report, and the first GGUF
conversion into a full cache. Each case runs on a small tmpfs that is already nearly full."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from interp.cli import main

SIZE = 2 * 2**20  # the tmpfs: 2 MiB


def _mount(point: Path) -> str | None:
    """Mount a 2 MiB tmpfs at `point`; the reason it cannot be done, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(point)], capture_output=True,
                          text=True)
    return None if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"


@pytest.fixture
def full_disk(tmp_path):
    """A tmpfs with only `free` bytes left (call it with the bytes to leave; default 64 KiB)."""
    point = Path("/tmp") / f"interp-full-{uuid.uuid4().hex[:8]}"
    reason = _mount(point)
    if reason:
        pytest.skip(f"no small filesystem to fill on this machine: {reason}")

    def fill(free: int = 64 * 1024) -> Path:
        with open(point / "filler", "wb") as fh:
            fh.write(b"\0" * (SIZE - free))
        return point

    yield fill
    subprocess.run(["umount", "-l", str(point)], check=False)
    point.rmdir()


def _left_files(root: Path) -> list[str]:
    """Every file on the tmpfs but the filler (temporaries included)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "filler")


def _one_line_no_space(capsys, root: Path) -> str:
    err = capsys.readouterr().err  # progress bars share stderr; the error is one line of its own
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(errors) == 1, err
    assert "no space left on" in errors[0] and str(root) in errors[0], err
    return errors[0]


def test_training_on_a_full_disk(full_disk, capsys):
    root = full_disk()
    code = main(["train", "--preset", "attn-only-1l", "--corpus", "synthetic", "--arch", "d_model=32",
                 "--arch", "n_ctx=32", "--arch", "vocab_size=300", "--arch", "n_heads=2", "--arch", "d_head=16",
                 "--max_steps", "2", "--warmup_steps", "0", "--save_steps", "2", "--eval_steps", "0", "--per_device_train_batch_size", "2",
                 "--device", "cpu", "--output_dir", str(root / "run")])
    assert code == 2
    _one_line_no_space(capsys, root)
    assert all(not f.endswith((".safetensors", ".pt")) and ".tmp-" not in f for f in _left_files(root)), _left_files(root)


def test_heads_out_and_plot_on_a_full_disk(full_disk, tiny_llama_dir, capsys):
    root = full_disk()
    code = main(["heads", "--model", str(tiny_llama_dir), "--seqs", "2", "--seg-len", "8", "--device", "cpu",
                 "--plot", str(root / "heads.html")])
    assert code == 2
    _one_line_no_space(capsys, root)
    assert _left_files(root) == []  # neither plotly.min.js nor a temporary


def test_index_build_on_a_full_disk(full_disk, tiny_llama_dir, capsys):
    root = full_disk(16 * 1024)
    code = main(["memories", "index", "--model", str(tiny_llama_dir), "--corpus", "synthetic", "--tokens", "256",
                 "--seq-len", "32", "--device", "cpu", "--out", str(root / "idx")])
    assert code == 2
    _one_line_no_space(capsys, root)
    assert not any(".tmp-" in f for f in _left_files(root)), _left_files(root)


def test_ioi_report_on_a_full_disk(full_disk):
    """write_report (what `interp ioi --out` calls after its work) on a full disk."""
    import torch

    from interp.circuits.discover import Discovery
    from interp.circuits.evaluate import Evaluation
    from interp.circuits.pipeline import IOIReport, write_report
    from interp.errors import WorkbenchError

    root = full_disk()
    disc = Discovery({"name mover": [(1, 2)]}, [((1, 2), "name mover")], {"logits": torch.zeros(2, 4)}, {}, 2.0, 0.5)
    report = IOIReport("tiny", 0, 4, 4, disc, Evaluation(2.0, 1.5, 0.75, 4))
    with pytest.raises(WorkbenchError, match="no space left on"):
        write_report(report, root / "ioi", 2, 4)
    assert not any(".tmp-" in f for f in _left_files(root)), _left_files(root)


@pytest.mark.slow
def test_first_gguf_conversion_into_a_full_cache(full_disk, monkeypatch, tmp_path, capsys):
    from interp.models.sources import bundled_gguf_path

    root = full_disk()
    gguf = tmp_path / "copy.gguf"
    os.symlink(bundled_gguf_path(), gguf)  # a file the cache has not converted yet
    monkeypatch.setenv("INTERP_CACHE", str(root / "cache"))
    code = main(["heads", "--model", str(gguf), "--seqs", "1", "--seg-len", "4", "--device", "cpu"])
    assert code == 2
    _one_line_no_space(capsys, root)
    assert _left_files(root) == []


def test_circuit_on_a_full_disk_is_refused_before_the_work(full_disk, tiny_llama_dir, capsys, monkeypatch):
    """Issue 28: `interp circuit --out` on a full disk failed only after its work (125 s on SmolLM2)
    and left an empty folder. The disk is checked first; nothing is written."""
    import sys

    root = full_disk()
    loading = sys.modules["interp.models.load"]
    monkeypatch.setattr(loading, "load", lambda *a, **k: pytest.fail("the model loaded before the disk was checked"))
    code = main(["circuit", "--model", str(tiny_llama_dir), "--task", "ioi", "--n-prompts", "2", "--device", "cpu",
                 "--out", str(root / "circuit")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: --out" in err and "MB free" in err and str(root) in err, err
    assert _left_files(root) == [] and not (root / "circuit").exists()
