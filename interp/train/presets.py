"""Named presets: an architecture (`NativeSpec`), its tokenizer, its data mix and the training
knobs that make it train well on a small machine.

The attn-only-{1,2,3}l / gelu-2l family follows Olsson et al. 2022 (LayerNorm, learned
positions); the modern variants swap in RMSNorm, SwiGLU, rotary, grouped-query attention and
ALiBi one idea at a time. Sizes are chosen so that attn-only-2l forms induction heads -- and
shows the in-context-learning phase change -- within minutes on a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from interp.errors import WorkbenchError
from interp.models.inhouse import NativeSpec
from interp.train.args import check_field_types
from interp.train.data import DataMix


@dataclass(frozen=True)
class Preset:
    name: str  # registry name, e.g. "attn-only-2l"
    description: str  # one line for `interp train --list-presets`
    spec: NativeSpec  # architecture; d_vocab is overwritten by the tokenizer's size
    tokenizer: str = "bpe"  # "bpe" (trained on the corpus) or "gpt2"
    vocab_size: int = 512  # BPE vocabulary size (ignored for gpt2)
    data: DataMix = field(default_factory=DataMix)  # what the training sequences are made of
    training: dict[str, Any] = field(default_factory=dict)  # TrainingArguments defaults for this preset

    def with_overrides(self, **arch: Any) -> Preset:
        """A copy with architecture fields changed (e.g. d_model=32 for a test-sized model)."""
        known = set(NativeSpec.__dataclass_fields__)
        unknown = set(arch) - known - {"vocab_size"}
        if unknown:
            raise WorkbenchError(f"unknown architecture overrides {sorted(unknown)}; known: {sorted(known)}")
        vocab = arch.pop("vocab_size", self.vocab_size)
        if isinstance(vocab, bool) or not isinstance(vocab, int):
            raise WorkbenchError(f"architecture vocab_size must be a whole number, got {vocab!r}")
        spec = replace(self.spec, **arch)
        check_field_types(spec, "architecture")
        return replace(self, spec=spec, vocab_size=vocab)


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> None:
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} is already registered")
    PRESETS[preset.name] = preset


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise WorkbenchError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# Small and fast, yet wide enough (4 heads of 32) to copy and match a 512-token vocabulary; half
# the sequences are repeated random segments, which reward induction heads from the first step.
# On the shared 2-core CPU, attn-only-2l grows a layer-0 previous-token head over the first
# ~1000 steps, but no induction head appeared within 2125 steps (21 minutes); see
# benchmarks/RESULTS.md. The phase change needs longer runs (`benchmarks/train.py --phase-change`).
_SMALL = dict(d_model=128, n_heads=4, d_head=32, n_ctx=128, seed=0)
_PHASE_CHANGE_MIX = DataMix(corpus=0.5, repeated=0.5, ioi=0.0, min_segment=16, max_segment=63)
_TRAINING = dict(
    max_steps=2500,
    learning_rate=3e-3,
    warmup_steps=30,
    lr_scheduler_type="constant_with_warmup",
    per_device_train_batch_size=16,
    eval_steps=25,
    save_steps=250,
    weight_decay=0.0,
)
_ATTN_ONLY = NativeSpec(n_layers=2, attn_only=True, normalization="LN", positional="standard", **_SMALL)

for _layers in (1, 2, 3):
    register_preset(
        Preset(
            f"attn-only-{_layers}l",
            f"{_layers}-layer attention-only transformer (LayerNorm, learned positions), as in Olsson et al. 2022",
            replace(_ATTN_ONLY, n_layers=_layers),
            data=_PHASE_CHANGE_MIX,
            training=dict(_TRAINING),
        )
    )
register_preset(
    Preset(
        "gelu-2l",
        "2-layer transformer with GELU MLPs (LayerNorm, learned positions)",
        NativeSpec(n_layers=2, attn_only=False, d_mlp=512, act_fn="gelu_new", **_SMALL),
        data=_PHASE_CHANGE_MIX,
        training=dict(_TRAINING),
    )
)
register_preset(
    Preset(
        "llama-2l",
        "2-layer modern transformer: RMSNorm, SwiGLU MLPs, rotary positions, grouped-query attention (4q/2kv)",
        NativeSpec(n_layers=2, attn_only=False, d_mlp=384, gated_mlp=True, act_fn="silu", normalization="RMS",
                   positional="rotary", n_kv_heads=2, **_SMALL),
        data=_PHASE_CHANGE_MIX,
        training=dict(_TRAINING),
    )
)
register_preset(
    Preset(
        "rotary-attn-only-2l",
        "2-layer attention-only transformer with RMSNorm and rotary positions",
        replace(_ATTN_ONLY, normalization="RMS", positional="rotary"),
        data=_PHASE_CHANGE_MIX,
        training=dict(_TRAINING),
    )
)
register_preset(
    Preset(
        "alibi-2l",
        "2-layer transformer with ALiBi positions, RMSNorm and SwiGLU MLPs",
        NativeSpec(n_layers=2, attn_only=False, d_mlp=384, gated_mlp=True, act_fn="silu", normalization="RMS",
                   positional="alibi", **_SMALL),
        data=_PHASE_CHANGE_MIX,
        training=dict(_TRAINING),
    )
)
