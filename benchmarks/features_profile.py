"""Where a training step of every layer's transcoders spends its time (a GPU profile: CUDA-synchronised
wall clock per part, medians over repeats), for the model in float32 and in bfloat16.

Parts of one step of interp.features.train (batch of --batch-tokens tokens, all layers):
  forward      capture_sites: one pass of the model to the deepest site, every layer's MLP input and output
  encode       pre-activations (x @ W_enc + b_enc) of every layer, under the step's autocast
  topk         TopK over the d_sae pre-activations of every token
  decode       the decode (--decodes: sparse, an embedding bag over the k decoder rows; dense, a product) and the FVU
  backward     the loss's backward pass
  adam         the optimizer step
  step         interp.features.train.train_step end to end (AuxK idle: no latent dead yet)

    python benchmarks/features_profile.py --device cuda --d-sae 9216 --k 64 --batch-tokens 16384 --out prof.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def timed(fn, device, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls of fn (after one warm-up call), and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def profile(model, args) -> dict:
    from interp.features import TrainSettings
    from interp.features.activations import capture_sites, valid_positions
    from interp.features.loss import step_loss
    from interp.features.train import build, train_step

    dev = model.device
    s = TrainSettings(site="mlp", d_sae=args.d_sae, k=args.k, corpus=args.corpus, n_tokens=args.batch_tokens * 40,
                      seq_len=args.seq_len, batch_tokens=args.batch_tokens, dtype=args.dtype, skip=args.skip,
                      layer_chunk=args.layer_chunk, dead_tokens=10**12, decode=args.decode).resolved(model)  # fmt: skip
    t = build(model, s)
    for _ in range(3):  # initialise and warm up
        train_step(t)
    per = t.windows_per_step
    batch = t.table[t.order[:per]]
    res = {"tokens_per_step": int(valid_positions(batch, model.bos_token_id is not None).sum())}
    res["forward"], (x, y) = timed(lambda: capture_sites(model, batch, t.d.site, t.d.layers), dev, args.repeats)
    valid = valid_positions(batch, model.bos_token_id is not None).flatten().to(x.device)
    x = (x[:, valid] / t.scales[0, :, None, None].to(x.dtype)).float()
    y = (y[:, valid] / t.scales[1, :, None, None].to(y.dtype)).float()
    cdt = torch.bfloat16 if s.dtype == "bfloat16" else torch.float32
    chunk = s.layer_chunk or len(t.d.layers)
    parts = {"encode": 0.0, "topk": 0.0, "decode": 0.0, "backward": 0.0}
    for lo in range(0, len(t.d.layers), chunk):
        part = t.d.rows(lo, lo + chunk)
        xc, yc = x[lo : lo + chunk].to(cdt), y[lo : lo + chunk]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cdt == torch.bfloat16):
            te, pre = timed(lambda: part.pre_acts(xc), dev, args.repeats)
            tk, (acts, idx) = timed(lambda: part.select(pre), dev, args.repeats)
            if s.decode == "dense":
                td, _ = timed(lambda: part.decode(torch.zeros_like(pre).scatter(-1, idx, acts), xc), dev, args.repeats)
            else:
                td, _ = timed(lambda: part.decode_sparse(acts, idx, xc), dev, args.repeats)

            def fwd_bwd():
                out = step_loss(part, xc, yc, decode=s.decode)
                out.loss.backward()

            tb, _ = timed(fwd_bwd, dev, args.repeats)
        t.opt.zero_grad(set_to_none=True)
        parts["encode"] += te
        parts["topk"] += tk
        parts["decode"] += td
        parts["backward"] += tb - te - tk - td  # the forward parts taken out again
    res.update(parts)
    for lo in range(0, len(t.d.layers), chunk):
        step_loss(t.d.rows(lo, lo + chunk), x[lo : lo + chunk].to(cdt), y[lo : lo + chunk], decode=s.decode).loss.backward()
    res["adam"], _ = timed(lambda: t.opt.step(), dev, args.repeats)
    t.opt.zero_grad(set_to_none=True)
    res["step"], _ = timed(lambda: train_step(t), dev, args.repeats)
    res["tokens_per_s"] = res["tokens_per_step"] / res["step"]
    res["peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default=None)
    p.add_argument("--model-dtypes", default="float32,bfloat16")
    p.add_argument("--dtype", default="bfloat16", help="the dictionaries' matmuls")
    p.add_argument("--corpus", default="mix")
    p.add_argument("--d-sae", type=int, default=9216)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--skip", action="store_true")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-tokens", type=int, default=16384)
    p.add_argument("--layer-chunks", default="10,30")
    p.add_argument("--decodes", default="sparse,dense", help="the training decodes to compare (loss.step_loss)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="features_profile.json")
    args = p.parse_args(argv)

    from interp import load

    torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    for mdt in args.model_dtypes.split(","):
        model = load(args.model, device=args.device, dtype=mdt)
        for chunk, decode in [(c, dec) for c in map(int, args.layer_chunks.split(",")) for dec in args.decodes.split(",")]:
            args.layer_chunk, args.decode = chunk, decode
            if model.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(model.device)
            try:
                row = {"model_dtype": mdt, "layer_chunk": chunk, "decode_kind": decode, **profile(model, args)}
            except torch.OutOfMemoryError as e:
                row = {"model_dtype": mdt, "layer_chunk": chunk, "decode_kind": decode, "error": f"out of memory: {str(e)[:200]}"}
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
            if model.device.type == "cuda":
                torch.cuda.empty_cache()
        del model
    result = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
              "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "args": vars(args), "rows": rows}  # fmt: skip
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
