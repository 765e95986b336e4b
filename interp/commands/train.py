"""`interp train`: train an in-house model from a preset, with HF-Trainer-named knobs.

  interp train --preset attn-only-2l --output_dir runs/a2 [--corpus kjv] [--max_steps 600] ...
  interp train --list-presets

Every TrainingArguments field is a flag, spelled with underscores or dashes (--max_steps or
--max-steps); flags left out take the preset's defaults. --arch KEY=VALUE changes the
architecture (d_model=64, n_ctx=128, vocab_size=1024, ...), --mix KEY=VALUE the data mix
(corpus=0.7, repeated=0.3, ioi=0).

Runs written under the runs folder (./runs, or $INTERP_RUNS_DIR) are listed, newest first, in the
dashboard's Training runs view; a run elsewhere is opened there by typing its folder.
"""

from __future__ import annotations

import argparse
import json
import typing
from dataclasses import fields
from pathlib import Path

from interp.errors import WorkbenchError


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _pairs(items: list[str] | None, what: str) -> dict[str, typing.Any]:
    out: dict[str, typing.Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise WorkbenchError(f"--{what} takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value  # plain strings: positional=rotary
    return out


def add_parser(sub) -> None:
    from interp.train.args import TrainingArguments

    p = sub.add_parser("train", help="train a small in-house model (presets: attn-only-2l, ...) with checkpoints",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="e.g.\n  interp train --preset attn-only-2l --output_dir runs/a2 --max_steps 600")
    p.add_argument("--preset", default="attn-only-2l", help="preset name (see --list-presets)")
    p.add_argument("--list-presets", "--list_presets", action="store_true", help="list presets and exit")
    p.add_argument("--corpus", default=None, help="corpus spec: kjv (default), pydocs, synthetic, a folder, hf:NAME")
    p.add_argument("--arch", action="append", metavar="KEY=VALUE", help="architecture override (repeatable)")
    p.add_argument("--mix", action="append", metavar="KEY=VALUE", help="data mix override (repeatable)")
    hints = typing.get_type_hints(TrainingArguments)
    for f in fields(TrainingArguments):
        hint = hints[f.name]
        base = hint if hint in (int, float, str, bool) else next(
            (t for t in typing.get_args(hint) if t in (int, float, str, bool)), str)
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        if base is bool:
            p.add_argument(*names, dest=f.name, nargs="?", const=True, type=_bool, default=None)
        else:
            p.add_argument(*names, dest=f.name, type=base, default=None, metavar=f.name.upper())
    p.set_defaults(func=run)


def run(args) -> int:
    from interp.train import PRESETS, get_preset, train, training_arguments
    from interp.train.args import TrainingArguments
    from interp.train.checkpoints import OutputDirInUse
    from interp.train.folders import RUNS_ENV, runs_dir

    if args.list_presets:
        for name, preset in PRESETS.items():
            print(f"{name:22s} {preset.description}")
        return 0
    preset = get_preset(args.preset)
    knobs = {f.name: getattr(args, f.name) for f in fields(TrainingArguments) if getattr(args, f.name) is not None}
    targs = training_arguments(preset, **knobs)
    if targs.output_dir is None:
        raise WorkbenchError(f"--output_dir is required: where checkpoints and metrics.jsonl go, e.g. --output_dir "
                             f"{runs_dir() / preset.name} (the dashboard lists the runs under {runs_dir()}/)")
    mix = _pairs(args.mix, "mix")
    data = preset.data.with_overrides(**mix) if mix else None
    try:
        result = train(preset, targs, corpus=args.corpus, arch=_pairs(args.arch, "arch") or None, data=data,
                       progress_bar=True)
    except OutputDirInUse as e:
        raise WorkbenchError(
            f"--output_dir {str(e.folder)!r} already holds checkpoints (newest: {e.newest.name}); add "
            "--resume_from_checkpoint latest to continue that run, or --overwrite_output_dir to delete them and start again"
        ) from e
    last = {}
    for record in result.metrics:
        last.update(record)
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in last.items()
             if k in ("step", "loss", "eval_loss", "icl_score", "icl_score_se", "repeat_bigram_gap", "induction_score",
                      "induction_head", "prev_token_score")}
    print(f"trained {preset.name} for {result.global_step} steps -> {result.output_dir}")
    print("final: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    if result.output_dir is not None and not _under(Path(result.output_dir), runs_dir()):
        print(f"note: the dashboard's Training runs view lists the runs under {runs_dir()}/ (set {RUNS_ENV} to change "
              f"it); type {result.output_dir} in its run folder box to open this one")
    return 0


def _under(folder: Path, root: Path) -> bool:
    folder, root = folder.expanduser().resolve(), root.expanduser().resolve()
    return root == folder or root in folder.parents
