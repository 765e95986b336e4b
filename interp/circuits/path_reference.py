"""Path patching written plainly: one hooked forward pass per sender (plus one per receiver
head), nothing batched, nothing cached beyond the clean and corrupted runs. It is the
obviously-correct reference that tests hold the fast `interp.circuits.path` against.

GQA: `hook_k`/`hook_v` hold one key/value per KV head, shared by several query heads. To
patch the key/value input of ONE receiver query head, the receiver's output is computed in
its own run (its KV head patched, which also disturbs its siblings), and only that head's
`hook_z` is carried into the final run.
"""

from __future__ import annotations

import torch

from interp import hooks
from interp.circuits.path import PathResult, Receivers, all_heads
from interp.data.task import Task, end_logits, metric_fn
from interp.types import Head


def _set_z(value: torch.Tensor):
    def hook(z, hook):
        return value

    return hook


@torch.no_grad()
def path_patch_reference(
    model, task: Task, senders: list[Head] | None = None, receivers: Receivers | None = None
) -> PathResult:
    senders = list(senders) if senders is not None else all_heads(model)
    L = model.info.n_layers
    z_names = hooks.names("z", range(L))
    clean_logits, clean = model.run_with_cache(task.clean, names_filter=lambda n: n in z_names)
    corr_logits, corr = model.run_with_cache(task.corrupted, names_filter=lambda n: n in z_names)
    clean_end = end_logits(clean_logits, task.reads)
    score = metric_fn(task, clean_end)

    def measure(logits):  # the task's metric at its reads (END), per prompt
        return score(end_logits(logits, task.reads))

    tokens = task.clean
    B, T = tokens.shape
    rows = torch.arange(B)
    if receivers is not None:
        pos = task.position(receivers.position)
        mask = torch.ones(B, T, dtype=torch.bool) if pos is None else torch.zeros(B, T, dtype=torch.bool)
        if pos is not None:
            mask[rows, pos] = True
        mask = mask.to(tokens.device)
    out = []
    for layer_s, head_s in senders:
        # step 1: every head frozen at its clean output, except the sender (corrupted)
        frozen = {layer: clean[hooks.name("z", layer)].clone() for layer in range(L)}
        frozen[layer_s][:, :, head_s] = corr[hooks.name("z", layer_s)][:, :, head_s]
        edits = [(hooks.name("z", layer), _set_z(frozen[layer])) for layer in range(L)]
        if receivers is None:
            logits = model.run_with_hooks(tokens, fwd_hooks=edits)
            out.append(measure(logits))
            continue
        seen = {}

        def keeper(name: str):  # hook.name may be an alias (e.g. "attn.q.hook_out"), so key by our name
            def keep(x, hook):
                seen[name] = x.clone()

            return keep

        for layer, _ in receivers.heads:
            edits += [(hooks.name(c, layer), keeper(hooks.name(c, layer))) for c in "qkv"]
        model.run_with_hooks(tokens, fwd_hooks=edits)
        # step 2a: each receiver's own output with its q/k/v inputs from step 1 at the chosen positions
        new_z = {}
        for layer, head in receivers.heads:
            group = head // (model.info.n_heads // model.info.n_kv_heads)
            patch = []
            for c in receivers.components:
                index = head if c == "q" else group
                patched = seen[hooks.name(c, layer)]

                def put(x, hook, patched=patched, index=index):
                    x = x.clone()
                    x[:, :, index] = torch.where(mask[:, :, None], patched[:, :, index], x[:, :, index])
                    return x

                patch.append((hooks.name(c, layer), put))
            got = {}

            def grab(z, hook, head=head):
                got["z"] = z[:, :, head].clone()

            model.run_with_hooks(tokens, fwd_hooks=patch + [(hooks.name("z", layer), grab)])
            new_z[(layer, head)] = got["z"]
        # step 2b: clean run with only the receivers' outputs replaced; everything else recomputed
        final = []
        for (layer, head), z_h in new_z.items():

            def set_head(z, hook, head=head, z_h=z_h):
                z = z.clone()
                z[:, :, head] = z_h
                return z

            final.append((hooks.name("z", layer), set_head))
        out.append(measure(model.run_with_hooks(tokens, fwd_hooks=final)))
    return PathResult(
        senders, torch.stack(out).cpu(), measure(clean_logits).cpu(), measure(corr_logits).cpu()
    )
