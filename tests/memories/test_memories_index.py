"""The on-disk index: resumable builds, clear errors on corrupt or unfinished indexes, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from interp.cli import main
from interp.errors import WorkbenchError
from interp.memories import IndexSettings, build_index, open_index

SETTINGS = {"top_k": 4, "seq_len": 32, "shard_tokens": 128}  # 4 windows per shard


def settings(corpus: str, layers: list[int], n_tokens: int) -> IndexSettings:
    return IndexSettings(corpus=corpus, layers=layers, n_tokens=n_tokens, **SETTINGS)


class Interrupt(Exception):
    pass


def test_interrupted_build_resumes_without_losing_or_duplicating_work(tiny_gpt2, tmp_path):
    full = build_index(tiny_gpt2, settings("kjv", [0, 1], 600), tmp_path / "full", batch_size=2)

    def stop_midway(done, total, message):
        if done >= 300:
            raise Interrupt

    with pytest.raises(Interrupt):
        build_index(tiny_gpt2, settings("kjv", [0, 1], 600), tmp_path / "part", batch_size=2, progress=stop_midway)
    manifest = json.loads((tmp_path / "part" / "manifest.json").read_text())
    assert manifest["status"] == "building" and 0 < manifest["shards_done"] < 5
    with pytest.raises(WorkbenchError, match="unfinished"):
        open_index(tmp_path / "part")
    with pytest.raises(WorkbenchError, match="other settings"):
        build_index(tiny_gpt2, settings("kjv", [0, 1], 700), tmp_path / "part", batch_size=2)

    calls = []
    resumed = build_index(tiny_gpt2, settings("kjv", [0, 1], 600), tmp_path / "part", batch_size=2,
                          progress=lambda *a: calls.append(a))
    key_calls = [c for c in calls if c[2] == "indexing keys"]
    assert key_calls[0][0] == manifest["n_positions"]  # starts where the finished shards ended
    batches_left = (len(full.windows) - manifest["n_windows"] + 1) // 2
    assert len(key_calls) == 1 + batches_left  # only the unfinished shards are run again
    assert resumed.n_tokens == full.n_tokens == 600
    assert torch.equal(resumed.windows, full.windows)
    assert resumed.signs == full.signs == ("+",)  # a GELU MLP: the "+" side only (keys.py)
    for layer in (0, 1):
        a, b = resumed.keys(layer), full.keys(layer)
        torch.testing.assert_close(a["coef"], b["coef"])
        assert torch.equal(a["ref"], b["ref"]) and torch.equal(a["active"], b["active"])
    assert resumed.agreement() == full.agreement()
    assert not (tmp_path / "part" / "work").exists()
    # a finished index with the same settings is just opened again
    again = build_index(tiny_gpt2, settings("kjv", [0, 1], 600), tmp_path / "part", batch_size=2, progress=lambda *a: 1 / 0)
    assert again.n_tokens == 600


def test_corrupt_index_gives_a_clear_error(tiny_gpt2, tmp_path, capsys):
    out = tmp_path / "idx"
    build_index(tiny_gpt2, settings("synthetic", [1], 200), out, batch_size=2)
    assert open_index(out).show(1, 0).triggers
    keys = out / "keys.safetensors"
    keys.write_bytes(keys.read_bytes()[:-100])  # truncated
    with pytest.raises(WorkbenchError, match="corrupt or truncated"):
        open_index(out).show(1, 0)
    keys.write_bytes(b"garbage")
    with pytest.raises(WorkbenchError, match="corrupt"):
        open_index(out)
    assert main(["memories", "show", "--index", str(out), "--layer", "1", "--neuron", "0"]) == 2
    assert "corrupt" in capsys.readouterr().err
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(WorkbenchError, match="manifest .* is corrupt"):
        open_index(out)
    with pytest.raises(WorkbenchError, match="not a memory index"):
        open_index(tmp_path)
    with pytest.raises(WorkbenchError, match="no memory index"):
        open_index(tmp_path / "missing")


def test_cli_index_show_agreement_search(tiny_gpt2_dir, tmp_path, capsys):
    out = tmp_path / "idx"
    args = ["memories", "index", "--model", str(tiny_gpt2_dir), "--corpus", "synthetic", "--layers", "0-1",
            "--tokens", "300", "--seq-len", "32", "--batch-size", "4", "--top-k", "5", "--out", str(out), "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert "indexed 300 tokens" in capsys.readouterr().out
    assert main(["memories", "show", "--index", str(out), "--layer", "1", "--neuron", "3"]) == 0
    shown = capsys.readouterr().out
    assert "[[" in shown and "]]" in shown and "value's top tokens" in shown
    assert main(["memories", "agreement", "--index", str(out)]) == 0
    table = capsys.readouterr().out
    assert "random" in table and (out / "agreement.html").is_file()
    index = open_index(out)
    token = index.show(0, 0).value_tokens[0][0]
    assert main(["memories", "search", "--index", str(out), "--token", token.strip() or token]) == 0
    assert "L0 N0+" in capsys.readouterr().out
    argv = ["memories", "intervene", "--model", str(tiny_gpt2_dir), "--prompt", "And God said", "--layer", "1",
            "--neuron", "3", "--mode", "on", "--value", "100", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "coefficient" in said and "generation after" in said


def test_show_and_search_refuse_bad_requests(tiny_gpt2, tmp_path):
    index = build_index(tiny_gpt2, settings("synthetic", [1], 100), tmp_path / "idx", batch_size=2)
    with pytest.raises(WorkbenchError, match="not in this index"):
        index.show(0, 0)
    with pytest.raises(WorkbenchError, match="out of range"):
        index.show(1, 10_000)
    with pytest.raises(WorkbenchError, match="holds only the '\\+' memories"):
        index.show(1, 0, "-")
    with pytest.raises(WorkbenchError, match="unknown sign"):
        index.show(1, 0, "±")
    for n in (0, -1):
        with pytest.raises(WorkbenchError, match="at least 1"):
            index.show(1, 0, n_triggers=n)
        with pytest.raises(WorkbenchError, match="at least 1"):
            index.search("the", top=n)
    with pytest.raises(WorkbenchError, match="empty token"):
        index.search("")
    with pytest.raises(WorkbenchError, match="vocabulary"):
        index.search("qqqqzzzzxxxx")
    token = index.show(1, 0).value_tokens[0][0]
    assert len(index.search(token.strip() or token, top=1)) == 1


def test_an_old_format_index_is_refused_naming_the_fix(tiny_gpt2, tmp_path, capsys):
    out = tmp_path / "idx"
    build_index(tiny_gpt2, settings("synthetic", [1], 100), out, batch_size=2)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format"] = "interp-memories/1"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WorkbenchError, match="format interp-memories/1.*rebuild it into a new folder"):
        open_index(out)
    assert main(["memories", "agreement", "--index", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interp memories index" in err and "Traceback" not in err


def test_a_top_k_state_that_cannot_fit_is_refused_before_work(tiny_gpt2, tmp_path, monkeypatch):
    from interp.memories.build import state_bytes

    assert state_bytes(30, 1536, 10**9, 2) == 30 * 1536 * 10**9 * 12 * 2  # the 6 TB the issue saw, x2 signs
    monkeypatch.setattr("interp.models.device.available_bytes", lambda device: 10**6)
    s = IndexSettings(corpus="synthetic", layers=[0, 1], n_tokens=10**9, top_k=10**4)
    with pytest.raises(WorkbenchError, match=r"top_k 10000 needs .* free; use top_k of at most 162 or index fewer"):
        build_index(tiny_gpt2, s, tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


def test_a_second_build_into_the_same_folder_is_refused(tiny_gpt2, tmp_path):
    """Issue 28: two builds into one folder with different settings both reported success and the
    folder held one of them. A build holds the folder's writer lock; a second one is refused."""
    import subprocess
    import sys

    out = tmp_path / "idx"
    code = ("import sys, time; from interp.io import writer_lock\n"
            "with writer_lock(sys.argv[1], 'index folder'):\n    print('holding', flush=True); time.sleep(600)")  # fmt: skip
    other = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "holding"
        with pytest.raises(WorkbenchError, match="another process is writing index folder"):
            build_index(tiny_gpt2, IndexSettings(corpus="synthetic", n_tokens=64, seq_len=16, top_k=2), out)
        assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.lock"]  # the holder's; nothing of ours
    finally:
        other.kill()  # kill -9: its lock dies with it (the file stays until the next writer)
        other.wait()
    index = build_index(tiny_gpt2, IndexSettings(corpus="synthetic", n_tokens=64, seq_len=16, top_k=2), out)
    assert index.n_tokens > 0 and sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
