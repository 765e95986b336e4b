"""interp.io: folders and files appear whole, failed writes leave nothing behind, racing writers
keep one folder, and output paths that cannot be written are refused before any work."""

from __future__ import annotations

import pytest

from interp import io
from interp.errors import WorkbenchError
from interp.io import write_dir


def test_folder_appears_whole(tmp_path):
    def fill(tmp):
        (tmp / "a.txt").write_text("a")
        assert not (tmp_path / "out").exists()  # nothing visible while filling

    write_dir(tmp_path / "out", fill)
    assert (tmp_path / "out" / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folder left behind


def test_failed_fill_leaves_nothing(tmp_path):
    def fill(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_dir(tmp_path / "out", fill)
    assert list(tmp_path.iterdir()) == []


def test_racing_writer_keeps_the_first_folder(tmp_path, monkeypatch):
    import os

    target = tmp_path / "out"
    real_replace = os.replace

    def replace_after_the_other_writer(src, dst):  # another process completes the folder first
        if not target.exists():
            target.mkdir()
            (target / "theirs.txt").write_text("1")
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", replace_after_the_other_writer)
    write_dir(target, lambda tmp: (tmp / "ours.txt").write_text("2"))
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_files_are_0644_and_failed_writes_leave_no_temporary(tmp_path):
    import os

    path = io.write_json(tmp_path / "a.json", {"x": 1})
    assert oct(os.stat(path).st_mode & 0o777) == "0o644" and path.read_text().strip().startswith("{")

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk went away")

    with pytest.raises(OSError):
        io.write_with(tmp_path / "b.bin", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_disk_full_is_a_one_line_error_naming_the_path(tmp_path):
    import errno

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WorkbenchError, match="no space left on .*b.bin"):
        io.write_with(tmp_path / "b.bin", full)
    assert list(tmp_path.iterdir()) == []


def test_remove_temporaries(tmp_path):
    (tmp_path / ".checkpoint-4.tmp-abc").mkdir()
    (tmp_path / ".x.json.tmp-1").write_text("")
    (tmp_path / "checkpoint-2").mkdir()
    assert len(io.remove_temporaries(tmp_path, "checkpoint-4")) == 1
    assert len(io.remove_temporaries(tmp_path)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-2"]


@pytest.mark.parametrize("make", ["file", "under-file", "folder"])
def test_output_paths_are_checked_before_work(tmp_path, make):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    if make == "file":
        with pytest.raises(WorkbenchError, match="is a file"):
            io.check_dir_target(tmp_path / "f")
        assert io.check_file_target(tmp_path / "f") == tmp_path / "f"
    elif make == "under-file":
        for check in (io.check_dir_target, io.check_file_target):
            with pytest.raises(WorkbenchError, match="which is a file"):
                check(tmp_path / "f" / "x" / "y")
    else:
        with pytest.raises(WorkbenchError, match="is a folder"):
            io.check_file_target(tmp_path / "d")
        assert io.check_dir_target(tmp_path / "d" / "new" / "deeper") == tmp_path / "d" / "new" / "deeper"
    assert not (tmp_path / "d" / "new").exists()  # checking creates nothing


def test_virtual_filesystem_is_refused():
    with pytest.raises(WorkbenchError, match="cannot write"):
        io.check_dir_target("/proc/interp-out")
