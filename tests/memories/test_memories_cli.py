"""Bad input to `interp memories ...` (issues 14 and 18): exit 2, one line on stderr, no
traceback, nothing left on disk; and the trace command's output."""

from __future__ import annotations

import errno

import pytest
from cli_helpers import error_line

from interp.cli import main
from interp.memories import IndexSettings, build_index

LONG = "And God said, Let there be light: and there was light. " * 20  # > the tiny models' 64 tokens


@pytest.fixture(scope="module")
def index_dir(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "idx"
    build_index(tiny_llama, IndexSettings(corpus="synthetic", n_tokens=300, seq_len=32, top_k=4, n_permutations=20), out)
    return out



def listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


CASES = [
    # index: refused before the model loads, or before any work
    (["index", "--model", "{model}", "--top-k", "1000000000", "--out", "{new}"], "--top-k 1000000000 exceeds --tokens"),
    (["index", "--model", "{model}", "--tokens", "2000000000", "--top-k", "1000000000", "--corpus", "synthetic",
      "--out", "{new}"], "needs 6.1 TB on cpu (the state and the merge"),
    (["index", "--model", "{model}", "--layers", "7", "--tokens", "10", "--top-k", "2", "--out", "{new}"], "out of range"),
    (["index", "--model", "{model}", "--layers", "x", "--out", "{new}"], "bad layers"),
    (["index", "--model", "{model}", "--tokens", "0", "--out", "{new}"], "must be positive"),
    (["index", "--model", "{model}", "--corpus", "nope", "--out", "{new}"], "unknown corpus"),
    (["index", "--model", "{model}", "--out", "{index}/manifest.json/x"], "which is a file"),
    # show / agreement / search
    (["show", "--index", "{new}", "--layer", "0", "--neuron", "0"], "no memory index"),
    (["show", "--index", "{index}", "--layer", "0", "--neuron", "0", "--triggers", "0"], "--triggers must be at least 1"),
    (["show", "--index", "{index}", "--layer", "0", "--neuron", "0", "--triggers", "-1"], "--triggers must be at least 1"),
    (["show", "--index", "{index}", "--layer", "0", "--neuron", "0", "--sign", "x"], "unknown sign 'x'"),
    (["show", "--index", "{index}", "--layer", "5", "--neuron", "0"], "not in this index"),
    (["show", "--index", "{index}", "--layer", "0", "--neuron", "64"], "neuron 64 is out of range"),
    (["agreement", "--index", "{index}", "--sign", "both"], "unknown sign 'both'"),
    (["search", "--index", "{index}", "--token", "the", "--top", "0"], "--top must be at least 1"),
    (["search", "--index", "{index}", "--token", "the", "--top", "-1"], "--top must be at least 1"),
    (["search", "--index", "{index}", "--token", ""], "--token is empty"),
    (["search", "--index", "{new}", "--token", "x"], "no memory index"),
    # intervene
    (["intervene", "--model", "{model}", "--prompt", "And God", "--layer", "0", "--neuron", "1", "--mode", "on",
      "--value", "nan"], "is not a finite number"),
    (["intervene", "--model", "{model}", "--prompt", "And God", "--layer", "0", "--neuron", "1", "--mode", "on",
      "--value", "inf"], "is not a finite number"),
    (["intervene", "--model", "{model}", "--prompt", "And God", "--layer", "0", "--neuron", "1", "--mode", "on",
      "--value", "1e308"], "is out of range: give a number in (0, 100]"),
    (["intervene", "--model", "{model}", "--prompt", "And God", "--layer", "0", "--neuron", "1", "--mode", "on",
      "--value", "-3"], "is out of range"),
    (["intervene", "--model", "{model}", "--prompt", "And God", "--layer", "0", "--neuron", "1", "--value", "3"],
     "--value sets the coefficient of --mode on"),
    (["intervene", "--model", "{model}", "--prompt", "   ", "--layer", "0", "--neuron", "1"], "empty prompt"),
    (["intervene", "--model", "{model}", "--prompt", LONG, "--layer", "0", "--neuron", "1"], "reads at most 64"),
    (["intervene", "--model", "{model}", "--prompt", "And God", "--layer", "2", "--neuron", "1"], "layer 2 is out of range"),
    (["intervene", "--model", "{model}", "--prompt", "And God", "--layer", "0", "--neuron", "-1"], "neuron -1 is out"),
    (["intervene", "--model", "{model}", "--prompt", "And God", "--layer", "0", "--neuron", "1", "--sign", "*"],
     "unknown sign '*'"),
    # trace
    (["trace", "--model", "{model}", "--prompt", " \n\t"], "empty prompt"),
    (["trace", "--model", "{model}", "--prompt", LONG], "reads at most 64"),
    (["trace", "--model", "{model}", "--prompt", "And God", "--top", "0"], "--top must be at least 1"),
    (["trace", "--model", "{model}", "--prompt", "And God", "--off", "9:0:+"], "layer 9 is out of range"),
    (["trace", "--model", "{model}", "--prompt", "And God", "--off", "0:64"], "neuron 64 is out of range"),
    (["trace", "--model", "{model}", "--prompt", "And God", "--off", "0:1:x"], "unknown sign 'x'"),
    (["trace", "--model", "{model}", "--prompt", "And God", "--off", "zero"], "bad memory 'zero'"),
    (["trace", "--model", "{model}", "--prompt", "And God", "--index", "{new}"], "no memory index"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[f"{c[0][0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_leaving_nothing(argv, message, tiny_llama_dir, index_dir, tmp_path, capsys):
    before = listing(index_dir)
    argv = ["memories"] + [a.format(model=tiny_llama_dir, new=tmp_path / "new", index=index_dir) for a in argv]
    assert main(argv) == 2
    line = error_line(capsys)
    assert message in line, line
    assert not (tmp_path / "new").exists() and listing(index_dir) == before


def test_the_same_empty_prompt_message_everywhere(tiny_llama_dir, capsys):
    lines = set()
    for command in (["intervene", "--layer", "0", "--neuron", "0"], ["trace"]):
        for prompt in ("", "  ", "\n"):
            assert main(["memories", *command, "--model", str(tiny_llama_dir), "--prompt", prompt]) == 2
            lines.add(error_line(capsys))
    assert lines == {"error: empty prompt: type some text (not only spaces) to run the model on"}


def test_disk_full_during_an_index_build(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    """A full disk at the first write: one line naming the path, no folder left. At a later
    write: the shards already recorded stay (no temporaries) and a rerun resumes to the end."""
    out = tmp_path / "idx"
    argv = ["memories", "index", "--model", str(tiny_llama_dir), "--corpus", "synthetic", "--tokens", "300",
            "--seq-len", "32", "--shard-tokens", "128", "--top-k", "4", "--out", str(out)]  # fmt: skip
    import safetensors.torch

    real, calls = safetensors.torch.save_file, {"n": 0}

    def full_after(n):
        def save(*a, **kw):
            calls["n"] += 1
            if calls["n"] > n:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*a, **kw)

        return save

    monkeypatch.setattr(safetensors.torch, "save_file", full_after(0))
    assert main(argv) == 2
    assert "no space left on" in error_line(capsys) and not out.exists()
    calls["n"] = 0
    monkeypatch.setattr(safetensors.torch, "save_file", full_after(4))  # two shards recorded, then full
    assert main(argv) == 2
    assert "no space left on" in error_line(capsys)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert main(argv) == 0 and "indexed 300 tokens" in capsys.readouterr().out


def test_trace_cli_lists_memories_and_switches_one_off(tiny_llama_dir, index_dir, capsys):
    argv = ["memories", "trace", "--model", str(tiny_llama_dir), "--prompt", "And God said", "--index", str(index_dir),
            "--top", "3", "--per-layer", "2", "--off", "1:3:+", "--off", "0:5:-"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "memories raising" in out and "by layer" in out and "trigger" in out
    assert "switched off L1 N3+, L0 N5-" in out and "new prediction" in out
