"""Issue 18 made to stay fixed: a table of bad inputs for every subcommand, run through
`interp.cli.main(argv)`. Each one exits 2 with exactly one line on stderr starting `error:` (the
last line: progress bars may come before it), prints no traceback, and leaves nothing on disk --
no half-written output and no hidden temporary.

One model serves the whole module: the tiny 4-layer Llama (deep enough for the IOI pipeline to run,
tests/conftest.py's tiny_llama4_dir), and `load` is wrapped so every command that asks for it gets the same instance after
the device and dtype are checked as `load` checks them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from interp.cli import main

LONG = "And God said, Let there be light: and there was light. " * 364  # 20,000 characters
assert len(LONG) >= 20_000

# a run that would train if nothing stopped it: a tiny in-house model for one step
TRAIN = ["train", "--preset", "attn-only-1l", "--corpus", "synthetic", "--arch", "d_model=16", "--arch", "n_ctx=16",
         "--arch", "vocab_size=300", "--arch", "n_heads=2", "--arch", "d_head=8", "--max_steps", "1",
         "--warmup_steps", "0", "--eval_steps", "0", "--device", "cpu"]  # fmt: skip
TRAIN_OUT = TRAIN + ["--output_dir", "{new}"]
TRAIN32 = [("n_ctx=32" if a == "n_ctx=16" else a) for a in TRAIN]  # long enough for the data mix's segments
SECONDS_PER_FORWARD = 1.0  # the circuit cost estimate's machine speed, fixed so the budget cases are the same everywhere


def _rows(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="module")
def cached():
    with _cached_load() as load:
        yield load


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, cached, tiny_llama4_dir):
    """Everything the cases point at: the model, a memory index, a plain file, existing folders
    (named like files), an earlier training run, a task file per kind of bad row, a read-only folder."""
    from interp.memories import IndexSettings, build_index

    ws = tmp_path_factory.mktemp("bad_inputs")
    model_dir = tiny_llama4_dir
    (ws / "afile").write_text("a file\n")
    (ws / "run" / "checkpoint-5").mkdir(parents=True)  # an earlier run's checkpoint
    for name in ("folder.html", "folder.txt"):
        (ws / name).mkdir()
        (ws / name / "keep").write_text("x")
    (ws / "blank.txt").write_text("  \n\t \n")
    good = {"clean": "x y z", "corrupted": "x y w", "answer": " a", "distractor": " b"}
    rows = {
        "lengths": {"clean": "a b c d", "corrupted": "a b", "answer": " e", "distractor": " f"},
        "multi": {"clean": "one two", "corrupted": "six ten", "answer": " antidisestablishmentarianism", "distractor": " f"},
        "blank": {"clean": "   ", "corrupted": "   ", "answer": " a", "distractor": " b"},
    }  # fmt: skip
    for name, row in rows.items():  # the bad row on line 2, and enough good ones for 2 held-out prompts
        (ws / f"{name}.jsonl").write_text(_rows(good, row, {**good, "clean": "x y q"}, {**good, "clean": "x y r"}))
    _circuit_files(ws, good)
    index = ws / "index"
    settings = IndexSettings(corpus="synthetic", n_tokens=256, seq_len=32, top_k=4, n_permutations=10)
    build_index(cached(str(model_dir), device="cpu"), settings, index)
    _damaged_indexes(ws, index)
    build_index(cached(str(_twin(model_dir, ws / "twin")), device="cpu"), settings, ws / "twin-index")
    assert main(TRAIN32 + ["--output_dir", str(ws / "trained"), "--save_steps", "1"]) == 0  # a run to resume
    readonly, undo = _readonly_dir(ws / "ro")
    writer = _other_writer(ws / "busy")  # another process writing ws/busy, for the whole module
    yield {"ws": ws, "model": model_dir, "index": index, "ro": readonly}
    writer.kill()
    writer.wait()
    undo()


def _other_writer(target: Path) -> subprocess.Popen:
    """A process holding interp.io.writer_lock(target) until killed."""
    import sys

    code = ("import sys, time; from interp.io import writer_lock\n"
            "with writer_lock(sys.argv[1]):\n    print('holding', flush=True); time.sleep(3600)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def _circuit_files(ws: Path, good: dict) -> None:
    """Task files that are wrong in ways only a careful reader sees (issue 28)."""
    other = [{**good, "clean": f"x y {c}"} for c in "qrs"]
    (ws / "Dist.jsonl").write_text(_rows(*[{**{k: v for k, v in r.items() if k != "distractor"}, "Distractor": " b"}
                                          for r in [good, *other]]))  # fmt: skip
    (ws / "two.jsonl").write_text(_rows(good, other[0]))
    (ws / "same.jsonl").write_text(_rows(good, {**other[0], "distractor": " a"}, *other[1:]))
    (ws / "ident.jsonl").write_text(_rows(good, {**other[0], "corrupted": other[0]["clean"]}, *other[1:]))
    (ws / "dup.jsonl").write_text(_rows(good, *other, good))
    (ws / "rows5000.jsonl").write_text(_rows(*[{**good, "clean": f"row {i} says z", "corrupted": f"row {i} says w"}
                                               for i in range(5000)]))  # fmt: skip
    body = "a " * 1900  # ~1,900 tokens: within the tiny model's context, far beyond what a gradient batch can hold
    (ws / "long.jsonl").write_text(_rows(*[{**good, "clean": body + c, "corrupted": body + "w"} for c in "zqrs"]))
    (ws / "chars.jsonl").write_text(_rows(*[{**good, "clean": LONG + c, "corrupted": LONG + "w"} for c in "zqrs"]))
    mib_2_layers = {"cfg": {"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 32},
                    "nodes": {"input": {"in_graph": True}}, "edges": {"input->logits": {"score": 1.0, "in_graph": True}}}  # fmt: skip
    (ws / "mib_other.json").write_text(json.dumps(mib_2_layers))  # MIB's edge file, for a 2-layer model


def _damaged_indexes(ws: Path, index: Path) -> None:
    """Copies of the index whose contents disagree with its manifest, one way each."""
    import shutil

    from safetensors.torch import load_file, save_file

    def damage(name: str, file: str, edit) -> None:
        shutil.copytree(index, ws / name)
        tensors = load_file(str(ws / name / file))
        edit(tensors)
        save_file(tensors, str(ws / name / file))

    damage("idx-refs", "keys.safetensors", lambda t: t["0.ref"].fill_(10**9))
    damage("idx-shape", "keys.safetensors", lambda t: t.update({"0.coef": t["0.coef"][:, :-1].contiguous()}))
    damage("idx-ids", "values.safetensors", lambda t: t["0.ids"].fill_(10**7))
    damage("idx-window", "tokens.safetensors", lambda t: t["windows"][0].fill_(10**7))


def _twin(model_dir: Path, parent: Path) -> Path:
    """A model of the same name (folder name) as `model_dir` but a wider MLP."""
    import shutil

    from transformers import AutoConfig, LlamaForCausalLM

    twin = parent / model_dir.name
    config = AutoConfig.from_pretrained(model_dir)
    config.intermediate_size *= 2
    LlamaForCausalLM(config).eval().save_pretrained(twin)
    for f in model_dir.glob("tokenizer*"):
        shutil.copy(f, twin)
    return twin


class _cached_load:
    """Within the block, `interp.load` and `interp.models.load.load` (what the commands call)
    open each model spec once: the device and dtype are still checked on every call."""

    def __enter__(self):
        import sys

        import interp
        import interp.models
        from interp.models.device import pick_device, pick_dtype

        loading = sys.modules["interp.models.load"]  # the module (interp.models.load is the function)

        real, cache = loading.load, {}

        def load(spec, device=None, dtype=None):
            key = (str(spec), pick_device(device), pick_dtype(dtype))
            load.calls += 1  # models handed out (a bad device is refused before, as `load` does)
            if key not in cache:
                cache[key] = real(spec, device=device, dtype=dtype)
            return cache[key]

        load.calls = 0
        self.patch = pytest.MonkeyPatch()
        for module in (interp, interp.models, loading):
            self.patch.setattr(module, "load", load)
        self.cache = cache
        return load

    def __exit__(self, *exc):
        self.patch.undo()


def _readonly_dir(path: Path):
    """A folder no write can go into: mode 0555 for a normal user; for root (whom modes do not
    stop) a read-only tmpfs. None where neither is possible."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return path, lambda: path.chmod(0o755)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        return None, lambda: None
    return path, lambda: subprocess.run(["umount", "-l", str(path)], check=False)


def _snapshot(*folders: Path) -> dict[str, tuple[int, int] | None]:
    """Every entry under the folders, hidden ones included; files with their size and mtime."""
    seen: dict[str, tuple[int, int] | None] = {}
    for folder in folders:
        for p in folder.rglob("*"):
            st = p.lstat()
            seen[str(p)] = (st.st_size, st.st_mtime_ns) if p.is_file() else None
    return seen


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.replace("\r", "\n").splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    assert [line for line in lines if line.strip()][-1] == errors[0], err  # nothing after it
    return errors[0]


PATHS = {  # an output path that cannot be written, and the words the refusal uses
    "empty": ("", "is empty"),
    "file": ("{file}", "is a file"),
    "under-file": ("{file}/x", "which is a file"),
    "readonly": ("{ro}/x", "cannot write"),
    "proc": ("/proc/interp-x", "cannot write"),
}
FILE_PATHS = {  # the same for an output file
    "folder": ("{ws}/folder.html", "is a folder"),
    "under-file": ("{file}/x.html", "which is a file"),
    "readonly": ("{ro}/x.html", "cannot write"),
    "proc": ("/proc/interp-x.html", "cannot write"),
}

HEADS = ["heads", "--model", "{model}", "--seqs", "2", "--seg-len", "4", "--device", "cpu"]
INDEX = ["memories", "index", "--model", "{model}", "--corpus", "synthetic", "--tokens", "64", "--seq-len", "16",
         "--top-k", "2", "--device", "cpu"]  # fmt: skip
IOI = ["ioi", "--model", "{model}", "--n-prompts", "2", "--n-abc", "2", "--no-checks", "--device", "cpu"]
CIRCUIT_TASK = ["circuit", "--model", "{model}", "--steps", "1", "--exact-top", "0", "--device", "cpu", "--out", "{new}",
                "--task"]  # fmt: skip
CIRCUIT = CIRCUIT_TASK[:-3] + ["--task", "ioi", "--n-prompts", "2"]
INTERVENE = ["memories", "intervene", "--model", "{model}", "--layer", "0", "--neuron", "1", "--device", "cpu"]
ON = INTERVENE + ["--prompt", "And God", "--mode", "on", "--value"]
TRACE = ["memories", "trace", "--model", "{model}", "--device", "cpu"]

CASES: dict[str, tuple[list[str], str]] = {}  # case -> (argv, words of the error line)
for kind, (path, words) in FILE_PATHS.items():
    CASES[f"heads-out-{kind}"] = (HEADS + ["--out", path.replace(".html", ".txt")], words)
    CASES[f"heads-plot-{kind}"] = (HEADS + ["--plot", path], words)
for kind, (path, words) in PATHS.items():
    CASES[f"index-out-{kind}"] = (INDEX + ["--out", path], words)
    CASES[f"train-output_dir-{kind}"] = (TRAIN + ["--output_dir", path], words)
    CASES[f"ioi-out-{kind}"] = (IOI + ["--out", path], words)
    CASES[f"circuit-out-{kind}"] = (CIRCUIT + ["--out", path], words)
CASES.update({
    # unchecked settings
    "train-adam_beta1": (TRAIN_OUT + ["--adam_beta1", "2"], "adam_beta1 must be in [0, 1)"),
    "train-adam_epsilon": (TRAIN_OUT + ["--adam_epsilon", "-1"], "adam_epsilon must be positive"),
    "train-mix-text": (TRAIN_OUT + ["--mix", "corpus=abc"], "corpus"),
    "train-resume-a-file": (TRAIN_OUT + ["--resume_from_checkpoint", "{file}"], "afile"),
    "train-rerun": (TRAIN + ["--output_dir", "{ws}/run"], "--resume_from_checkpoint latest"),
    "train-huge-batch": (TRAIN_OUT + ["--per_device_train_batch_size", "1000000000"], "per_device_train_batch_size"),
    "heads-mps": (HEADS[:-1] + ["mps"], "MPS is not available"),
    "heads-blank-text": (HEADS + ["--text", "{ws}/blank.txt"], "is empty"),
    "index-top-k": (INDEX + ["--top-k", "1000000000", "--out", "{new}"], "--top-k 1000000000 exceeds"),
    "intervene-1e308": (ON + ["1e308"], "out of range"),
    "intervene-nan": (ON + ["nan"], "not a finite number"),
    "intervene-inf": (ON + ["inf"], "not a finite number"),
    "intervene-blank": (INTERVENE + ["--prompt", " \n\t "], "empty prompt"),
    "intervene-20000-chars": (INTERVENE + ["--prompt", LONG], "reads at most 2048"),
    "trace-blank": (TRACE + ["--prompt", "   "], "empty prompt"),
    "trace-20000-chars": (TRACE + ["--prompt", LONG], "reads at most 2048"),
    # wrong answers to odd input
    "search-top-0": (["memories", "search", "--index", "{index}", "--token", "the", "--top", "0"], "--top must be at least 1"),
    "search-top-neg": (["memories", "search", "--index", "{index}", "--token", "the", "--top", "-1"], "--top must be at least 1"),
    "search-empty-token": (["memories", "search", "--index", "{index}", "--token", ""], "--token is empty"),
    "show-triggers-0": (["memories", "show", "--index", "{index}", "--layer", "0", "--neuron", "0", "--triggers", "0"],
                        "--triggers must be at least 1"),
    "show-triggers-neg": (["memories", "show", "--index", "{index}", "--layer", "0", "--neuron", "0", "--triggers", "-1"],
                          "--triggers must be at least 1"),
    "ioi-position-threshold-word": (IOI + ["--out", "{new}", "--position-threshold", "lots"], "or 'none'"),
    "ioi-position-threshold-2": (IOI + ["--out", "{new}", "--position-threshold", "2"], "choose one in (0, 1]"),
    # runaways
    "ioi-million": (["ioi", "--model", "{model}", "--n-prompts", "1000000", "--device", "cpu", "--out", "{new}"],
                    "use at most about"),
    # circuit task files and names
    "circuit-lengths": (CIRCUIT_TASK + ["{ws}/lengths.jsonl"], "tokenize to the same length"),
    "circuit-multi-token": (CIRCUIT_TASK + ["{ws}/multi.jsonl"], "give a single-token answer"),
    "circuit-blank-prompt": (CIRCUIT_TASK + ["{ws}/blank.jsonl"], "line 2"),
    "circuit-method": (CIRCUIT_TASK + ["ioi", "--method", "acdc"], "unknown method 'acdc'"),
    "circuit-task": (CIRCUIT_TASK + ["sorting"], "unknown task 'sorting'"),
    "circuit-corruption": (CIRCUIT_TASK + ["ioi", "--corruption", "xyz"], "unknown IOI corruption 'xyz'"),
    "circuit-corruption-not-ioi": (CIRCUIT_TASK + ["induction", "--corruption", "abc"], "drop --corruption"),
    # issue 28: wrong answers with exit 0, unbounded runs, wasted work, a second writer
    "circuit-Distractor-key": (CIRCUIT_TASK + ["{ws}/Dist.jsonl"], 'has the key "Distractor"'),
    "circuit-two-rows": (CIRCUIT_TASK + ["{ws}/two.jsonl"], "needs at least 2 held-out prompts"),
    "circuit-answer-is-distractor": (CIRCUIT_TASK + ["{ws}/same.jsonl"], "line 2: the distractor is the answer"),
    "circuit-identical-pair": (CIRCUIT_TASK + ["{ws}/ident.jsonl"], "line 2: the corrupted prompt is the clean one"),
    "circuit-repeated-row": (CIRCUIT_TASK + ["{ws}/dup.jsonl"], "line 5 repeats line 1"),
    "circuit-heldout-1": (CIRCUIT_TASK + ["ioi", "--n-prompts", "4", "--n-heldout", "1"], "give no 95% interval"),
    "circuit-random-draws": (CIRCUIT_TASK + ["ioi", "--random-draws", "-1"], "needs 0 or more draws"),
    "circuit-scores-missing": (CIRCUIT_TASK + ["ioi", "--scores", "{ws}/nothing.json"], "no such file"),
    "circuit-mib-other-model": (CIRCUIT_TASK + ["ioi", "--n-prompts", "2", "--scores", "{ws}/mib_other.json"],
                                "written for a model with 2 layers of 4 heads"),
    "circuit-max-minutes-0": (CIRCUIT_TASK + ["ioi", "--max-minutes", "0"], "--max-minutes must be a positive"),
    "circuit-out-foreign": (CIRCUIT + ["--out", "{ws}/folder.txt"], "holds other files (keep)"),
    "circuit-out-busy": (CIRCUIT + ["--out", "{ws}/busy"], "another process is writing --out"),
    "ioi-out-foreign": (IOI + ["--out", "{ws}/folder.txt"], "holds other files (keep)"),
    "ioi-out-busy": (IOI + ["--out", "{ws}/busy"], "another process is writing --out"),
    "circuit-exact-over-budget": (CIRCUIT_TASK + ["ioi", "--method", "exact"], "more than the budget of 60 min"),
    "circuit-steps-100000": (CIRCUIT_TASK + ["ioi", "--steps", "100000"], "pass --max-minutes"),
    "circuit-5000-rows": (CIRCUIT_TASK + ["{ws}/rows5000.jsonl"], "more than the budget"),
    "circuit-long-prompts": (CIRCUIT_TASK + ["{ws}/long.jsonl", "--steps", "40", "--max-minutes", "1e9"],
                             "GB of activations"),
    "circuit-20000-chars": (CIRCUIT_TASK + ["{ws}/chars.jsonl"], "chars.jsonl line 1: text is"),
    "show-damaged-refs": (["memories", "show", "--index", "{ws}/idx-refs", "--layer", "0", "--neuron", "0"],
                          "trigger positions point outside"),
    "show-damaged-shape": (["memories", "show", "--index", "{ws}/idx-shape", "--layer", "0", "--neuron", "63"],
                           "0.coef has shape"),
    "show-damaged-ids": (["memories", "show", "--index", "{ws}/idx-ids", "--layer", "0", "--neuron", "0"],
                         "value tokens lie outside"),
    "search-damaged-windows": (["memories", "search", "--index", "{ws}/idx-window", "--token", "the"],
                               "ids outside the vocabulary"),
    "trace-index-of-a-twin": (TRACE + ["--prompt", "And God", "--index", "{ws}/twin-index"], "d_mlp 128 (the model: 64)"),
    "index-busy": (INDEX + ["--out", "{ws}/busy"], "another process is writing --out"),
    "train-resume-other-arch": (TRAIN32 + ["--arch", "d_model=32", "--output_dir", "{ws}/trained", "--max_steps", "2",
                                           "--resume_from_checkpoint", "latest"], "d_model=32, the checkpoint has 16"),
    "train-n_ctx-below-segment": (TRAIN_OUT, "shortest repeated segment"),
})  # fmt: skip
# refused before the model loads: every output path, and the settings that need no model to judge
BEFORE_LOADING = {c for c in CASES if "-out" in c or "-plot" in c} | {
    "heads-mps", "heads-blank-text", "index-top-k", "intervene-nan", "intervene-inf", "intervene-blank", "trace-blank",
    "circuit-method", "circuit-task", "circuit-corruption", "circuit-corruption-not-ioi", "circuit-Distractor-key",
    "circuit-two-rows", "circuit-answer-is-distractor", "circuit-identical-pair", "circuit-repeated-row",
    "circuit-heldout-1", "circuit-max-minutes-0", "circuit-random-draws", "circuit-scores-missing", "index-busy", "ioi-out-foreign", "ioi-out-busy"}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_leaving_nothing(case, workspace, cached, tmp_path, capsys, monkeypatch):
    argv, words = CASES[case]
    # the same free memory on every machine: a million tiny-model IOI prompts need ~120 GB
    monkeypatch.setattr("interp.models.device.available_bytes", lambda device: 16 * 2**30)
    monkeypatch.setattr("interp.circuits.cost.seconds_per_forward", lambda *a, **k: SECONDS_PER_FORWARD)
    if "{ro}" in " ".join(argv) and workspace["ro"] is None:
        pytest.skip("no read-only folder on this machine (root, and no tmpfs can be mounted)")
    fill = {"model": workspace["model"], "index": workspace["index"], "file": workspace["ws"] / "afile",
            "ws": workspace["ws"], "ro": workspace["ro"], "new": tmp_path / "new"}
    argv = [a.format(**fill) for a in argv]
    cwd = Path.cwd()
    before = _snapshot(workspace["ws"], tmp_path), sorted(os.listdir(cwd)), sorted(os.listdir("/tmp"))
    loads = cached.calls
    assert main(argv) == 2
    line = _error_line(capsys.readouterr().err)
    if case in BEFORE_LOADING:
        assert cached.calls == loads, "refused only after the model loaded"
    assert words in line, line
    after = _snapshot(workspace["ws"], tmp_path), sorted(os.listdir(cwd)), sorted(os.listdir("/tmp"))
    assert after[0] == before[0] and after[1] == before[1]
    ours = [n for n in set(after[2]) - set(before[2]) if n.startswith((".interp", "interp", "tmp"))]
    assert not ours, ours


def test_ioi_out_is_replaced_whole(workspace, cached, tmp_path, capsys):
    """A rerun of `interp ioi` into its --out replaces the folder whole (issue 28's circuit finding,
    for the IOI report too): nothing of the first run is left beside the second's."""
    out = tmp_path / "ioi"
    argv = ["ioi", "--model", str(workspace["model"]), "--n-abc", "2", "--no-checks", "--device", "cpu", "--out", str(out)]
    assert main(argv + ["--n-prompts", "2"]) == 0
    (out / "path_stale.html").write_text("a heatmap an earlier version wrote")  # one of ours, by its name
    assert main(argv + ["--n-prompts", "1"]) == 0
    assert json.loads((out / "circuit.json").read_text())["n_prompts"] == 1
    assert not (out / "path_stale.html").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ioi"]
    capsys.readouterr()


def test_ioi_on_one_and_two_prompts(workspace, cached, tmp_path, capsys):
    """--n-prompts 1 and 2 once crashed with a KeyError inside path patching: they now run to the
    end (exit 0) and write the report."""
    for n in ("1", "2"):
        out = tmp_path / n
        code = main(["ioi", "--model", str(workspace["model"]), "--n-prompts", n, "--n-abc", "2", "--no-checks",
                     "--device", "cpu", "--out", str(out)])  # fmt: skip
        captured = capsys.readouterr()
        assert code == 0 and "Traceback" not in captured.err, captured.err
        assert json.loads((out / "circuit.json").read_text())["n_prompts"] == int(n)
        assert f"discovery on {n} prompts" in captured.out and "faithfulness" in captured.out


def test_one_model_load_for_the_module(cached, workspace):
    """The wrapper hands out one instance per spec; bad devices are still refused."""
    from interp.errors import WorkbenchError

    assert cached(str(workspace["model"]), device="cpu") is cached(str(workspace["model"]), device="cpu")
    with pytest.raises(WorkbenchError, match="MPS is not available"):
        cached(str(workspace["model"]), device="mps")
