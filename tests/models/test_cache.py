"""Atomic cache folders: readers never see half a folder, and two writers racing keep one."""

from __future__ import annotations

import pytest

from interp.models.cache import write_dir_atomically


def test_folder_appears_whole(tmp_path):
    def fill(tmp):
        (tmp / "a.txt").write_text("a")
        assert not (tmp_path / "out").exists()  # nothing visible while filling

    write_dir_atomically(tmp_path / "out", fill)
    assert (tmp_path / "out" / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folder left behind


def test_failed_fill_leaves_nothing(tmp_path):
    def fill(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_dir_atomically(tmp_path / "out", fill)
    assert list(tmp_path.iterdir()) == []


def test_racing_writer_keeps_the_first_folder(tmp_path, monkeypatch):
    import os

    import interp.models.cache as cache

    target = tmp_path / "out"
    real_replace = os.replace

    def replace_after_the_other_writer(src, dst):  # another process completes the folder first
        if not target.exists():
            target.mkdir()
            (target / "theirs.txt").write_text("1")
        return real_replace(src, dst)

    monkeypatch.setattr(cache.os, "replace", replace_after_the_other_writer)
    write_dir_atomically(target, lambda tmp: (tmp / "ours.txt").write_text("2"))
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
