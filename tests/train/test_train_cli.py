"""`interp train`: both flag spellings, checkpoints on disk, bad input exits 2 with one line."""

from __future__ import annotations

from interp.cli import main
from interp.train import list_checkpoints, read_metrics


def test_cli_trains_with_dashed_and_underscored_flags(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    code = main([
        "train", "--preset", "attn-only-1l", "--corpus", tiny_corpus, "--arch", "d_model=32", "--arch", "n_ctx=32",
        "--arch", "vocab_size=300", "--arch", "n_heads=2", "--arch", "d_head=16",
        "--max-steps", "4", "--warmup_steps", "1", "--save-steps", "2", "--eval_steps", "0", "--logging-steps", "1",
        "--per_device_train_batch_size", "2", "--gradient-accumulation-steps", "2", "--lr_scheduler_type", "cosine",
        "--optim", "adafactor", "--learning-rate", "0.01", "--device", "cpu", "--output_dir", str(out),
    ])
    assert code == 0, capsys.readouterr().err
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4"]
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert "trained attn-only-1l for 4 steps" in capsys.readouterr().out


def test_cli_bad_input_exits_2_with_a_clear_message(tmp_path, capsys):
    cases = [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--max-steps", "-3"], "max_steps must be positive"),
        (["--lr_scheduler_type", "exp"], "unknown lr_scheduler_type 'exp'"),
        (["--warmup-steps", "900", "--max_steps", "10"], "warmup_steps (900) is longer than max_steps (10)"),
        (["--arch", "d_model"], "--arch takes KEY=VALUE"),
    ]
    for extra, message in cases:
        code = main(["train", "--output_dir", str(tmp_path), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (extra, err)
    assert main(["train", "--max_steps", "3"]) == 2
    assert "--output_dir is required" in capsys.readouterr().err


def test_cli_lists_presets(capsys):
    assert main(["train", "--list-presets"]) == 0
    out = capsys.readouterr().out
    for name in ("attn-only-1l", "attn-only-2l", "attn-only-3l", "gelu-2l", "llama-2l", "alibi-2l"):
        assert name in out


def test_cli_refuses_bad_numbers_and_mixes_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    cases = [
        (["--adam_beta1", "2"], "adam_beta1 must be in [0, 1), got 2.0"),
        (["--adam_beta2", "1"], "adam_beta2 must be in [0, 1), got 1.0"),
        (["--adam_epsilon", "-1"], "adam_epsilon must be positive, got -1.0"),
        (["--adam_epsilon", "0"], "adam_epsilon must be positive, got 0.0"),
        (["--learning_rate", "-0.1"], "learning_rate must be positive"),
        (["--learning_rate", "nan"], "learning_rate must be positive, got nan"),
        (["--weight_decay", "-1"], "weight_decay must be zero or positive"),
        (["--max_grad_norm", "inf"], "max_grad_norm must be zero or positive, got inf"),
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size must be positive"),
        (["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps must be positive"),
        (["--logging_steps", "-1"], "logging_steps must be zero or positive"),
        (["--seed", "-1"], "seed must be zero or positive"),
        (["--mix", "corpus=abc"], "data mix corpus must be a number, got 'abc'"),
        (["--mix", "repeated=-1"], "data mix weights must be non-negative"),
        (["--mix", "corpse=1"], "unknown data mix fields ['corpse']"),
        (["--arch", "d_model=abc"], "architecture d_model must be a whole number, got 'abc'"),
        (["--overwrite_output_dir", "--resume_from_checkpoint", "latest"], "overwrite_output_dir deletes the checkpoints"),
    ]
    for extra, message in cases:
        code = main(["train", "--output_dir", str(out), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (extra, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not out.exists(), extra
