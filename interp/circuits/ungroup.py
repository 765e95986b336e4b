"""MIB's graph: every query head with its own key and value inputs.

Our graph (interp.circuits.graph) follows the model as it computes: on a grouped-query model
(SmolLM2: 9 query heads share 3 KV heads a layer) keys and values are computed once per KV head,
so an edge into a k or v input feeds its whole group. MIB (Mueller et al. 2025) and the EAP-IG code
it builds on ungroup attention first: each query head gets a copy of its KV head's key and value
weights, so each has its own q, k and v inputs and an edge into one of them changes that head
alone. On SmolLM2 that graph has 302 nodes and 123,000-odd edges against our 70,651, and "5% of the
edges" means another set of edges there.

    mib = ungrouped(model)      # the same function, n_kv_heads == n_heads
    Graph.of(mib)               # MIB's graph; every engine runs on it unchanged

`ungrouped` builds that copy: the K and V projections' rows (and biases) of KV head g repeated
for each query head of its group, every other weight shared with the original (no copy of the
embeddings, MLPs or norms). The function the model computes is the same (tests compare logits);
only the graph differs. A model without grouped queries is returned as it is: both graphs agree
there. GRAPHS names the two for `interp circuit --graph`.
"""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from interp.errors import WorkbenchError

if TYPE_CHECKING:
    from interp.models import Model

GRAPHS: tuple[str, ...] = ("grouped", "mib")  # ours (k/v per KV head, the default), MIB's (q/k/v per query head)
GRAPH_HELP = {
    "grouped": "ours: one k and one v input per KV head (on GQA models an edge there feeds the whole group)",
    "mib": "MIB's: q, k and v inputs per query head (GQA ungrouped, as MIB and the EAP-IG code score)",
}


def check_graph(name: str) -> str:
    """Refuse a graph name other than `GRAPHS` (one line naming the choices)."""
    if name not in GRAPHS:
        raise WorkbenchError(f"unknown graph {name!r}; choose {' or '.join(GRAPHS)} (e.g. --graph mib)")
    return name


def repeat_kv_rows(w: Tensor, n_kv: int, group: int) -> Tensor:
    """A K or V projection's output rows [n_kv * d_head, ...] with KV head g's block repeated for each
    of the `group` query heads that read it: [n_kv * group * d_head, ...], query head h's block = g's
    with g = h // group (the grouping every GQA implementation uses)."""
    blocks = w.reshape(n_kv, w.shape[0] // n_kv, *w.shape[1:])
    return blocks.repeat_interleave(group, dim=0).reshape(n_kv * group * blocks.shape[1], *w.shape[1:])


def ungrouped(model: Model) -> Model:
    """The model with every query head given its own key and value weights (module docstring)."""
    info = model.info
    if info.n_kv_heads == info.n_heads:
        return model
    if info.n_heads % info.n_kv_heads:
        raise WorkbenchError(f"{info.name}: {info.n_heads} query heads do not split into {info.n_kv_heads} KV groups")
    # kept on the model while its weights are untouched (an in-place edit bumps a tensor's _version)
    stamp = sum(p._version for p in model.bridge.parameters())
    memo = model.memo.get("ungrouped")
    if memo is not None and memo[0] == stamp:
        return memo[1]
    out = _ungroup_inhouse(model) if info.source == "inhouse" else _ungroup_hf(model)
    model.memo["ungrouped"] = (stamp, out)
    return out


def _ungroup_hf(model: Model) -> Model:
    """An HF causal LM whose config names num_key_value_heads: a copy with it set to the query heads'
    count, its k_proj / v_proj rows repeated, everything else loaded as it is."""
    from transformers import AutoModelForCausalLM

    from interp.bridge import plain_state_dict
    from interp.models.load import from_hf

    info = model.info
    hf = model.bridge.original_model
    config = copy.deepcopy(hf.config)
    if getattr(config, "num_key_value_heads", None) != info.n_kv_heads:
        raise WorkbenchError(f"{info.name}'s config does not name its {info.n_kv_heads} KV heads; the MIB graph "
                             "needs a model whose grouped keys and values can be ungrouped (use --graph grouped)")  # fmt: skip
    config.num_key_value_heads = info.n_heads
    group = info.n_heads // info.n_kv_heads
    param = next(hf.parameters())
    with torch.device(param.device):  # built in place (its rotary tables too), then every weight loaded over it
        new = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=param.dtype)
    have = plain_state_dict(model.bridge)
    state = {}
    for name in new.state_dict():
        if name not in have:
            raise WorkbenchError(f"{info.name}: cannot find weight {name!r} to ungroup; use --graph grouped")
        p = have[name]
        if name.endswith(("k_proj.weight", "v_proj.weight", "k_proj.bias", "v_proj.bias")):
            p = repeat_kv_rows(p, info.n_kv_heads, group)
        state[name] = p
    new.load_state_dict(state, strict=True)
    new.eval()
    folder = Path(tempfile.mkdtemp(prefix="interp-ungrouped-"))
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    return from_hf(new, folder, model.tokenizer, f"{info.name} (ungrouped)", info.source, info.location)


def _ungroup_inhouse(model: Model) -> Model:
    """An in-house model: the same spec with n_kv_heads = n_heads, K and V weights repeated."""
    from interp.models.inhouse import NativeSpec, build_native, native_state_dict

    spec = model.memo.get("native_spec")
    if not isinstance(spec, NativeSpec):
        raise WorkbenchError(f"{model.info.name}: the in-house architecture is unknown here; load it with "
                             "interp.load(folder) to score MIB's graph")  # fmt: skip
    info = model.info
    group = info.n_heads // info.n_kv_heads
    new_spec = replace(spec, n_kv_heads=None)
    out = build_native(new_spec, model.tokenizer, device=model.device, dtype=model.dtype,
                       name=f"{info.name} (ungrouped)", location=info.location)  # fmt: skip
    state = {}
    target = out.bridge.original_model.state_dict()
    for name, p in native_state_dict(model).items():
        if p.shape != target[name].shape:
            p = _repeat_to(p, target[name].shape, info.n_kv_heads, group)
        state[name] = p
    out.bridge.original_model.load_state_dict(state, strict=True)
    return out


def _repeat_to(p: Tensor, shape: torch.Size, n_kv: int, group: int) -> Tensor:
    """A native K/V weight or bias whose KV axis (n_kv heads, possibly flattened with d_head) is the one
    axis `group` times shorter than in `shape`: that axis's KV blocks repeated."""
    for axis, n in enumerate(p.shape):
        if n * group == shape[axis] and n % n_kv == 0:
            moved = p.movedim(axis, 0)
            return repeat_kv_rows(moved, n_kv, group).movedim(0, axis)
    raise WorkbenchError(f"cannot ungroup a weight of shape {tuple(p.shape)} into {tuple(shape)}")


__all__ = ["GRAPHS", "GRAPH_HELP", "check_graph", "repeat_kv_rows", "ungrouped"]
