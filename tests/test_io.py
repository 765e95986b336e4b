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


def test_empty_output_paths_are_refused():
    """Path("") is the working folder: an empty --out once wrote a run's files there (issue 28)."""
    for check in (io.check_dir_target, io.check_file_target):
        with pytest.raises(WorkbenchError, match="--out is empty"):
            check("  ", "--out")


def test_free_space_and_replaceable_folders(tmp_path):
    io.check_free_space(tmp_path / "new" / "sub", 1000)  # a path that does not exist yet: its disk is checked
    with pytest.raises(WorkbenchError, match="needs about .* MB but its disk has"):
        io.check_free_space(tmp_path / "out", 10**18)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "edges.json").write_text("{}")
    io.check_replaceable(tmp_path / "run", {"edges.json"})
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(WorkbenchError, match=r"holds other files \(notes.txt\) and would be replaced as a whole"):
        io.check_replaceable(tmp_path / "run", {"edges.json"})


def test_writer_lock_refuses_a_second_writer_and_leaves_nothing(tmp_path):
    import subprocess
    import sys
    import threading

    target = tmp_path / "deep" / "out"
    with io.writer_lock(target):
        with io.writer_lock(target):  # the same thread again (a command's lock, then its library's)
            pass
        code = "import sys; from interp.io import writer_lock\nwith writer_lock(sys.argv[1]): pass"
        other = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, check=False)
        assert other.returncode == 1 and "another process is writing" in other.stderr
        caught = []

        def second():
            try:
                with io.writer_lock(target):
                    pass
            except WorkbenchError as e:
                caught.append(str(e))

        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
        assert caught and "another process is writing output folder" in caught[0]
    assert list(tmp_path.iterdir()) == []  # the lock file and the folder it made are gone
    with io.writer_lock(target):  # free again
        target.mkdir()
    assert [p.name for p in target.parent.iterdir()] == ["out"]


def test_a_replaced_folder_is_never_missing(tmp_path):
    """Replacing a folder swaps it with the new one in one step: a reader polling it all along
    never finds it missing (two renames left a moment, and a kill there left no folder at all)."""
    import threading

    target = tmp_path / "out"
    write_dir(target, lambda tmp: (tmp / "v").write_text("0"))
    if not io._exchange(tmp_path / "out", tmp_path / "out"):  # swapping a path with itself: a no-op
        pytest.skip("no renameat2 RENAME_EXCHANGE here (the two-rename fallback runs)")
    done, missing = threading.Event(), []

    def reader():
        while not done.is_set():
            try:
                (target / "v").read_text()
            except FileNotFoundError:
                missing.append(1)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(1, 200):
        write_dir(target, lambda tmp, i=i: (tmp / "v").write_text(str(i)))
    done.set()
    thread.join()
    assert not missing and (target / "v").read_text() == "199"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
