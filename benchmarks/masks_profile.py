"""Where learned edge masks spend their time (interp.circuits.masks on SmolLM2 IOI): the EAP-IG warm start,
building the gated forwards, then optimizer steps timed one by one (CUDA-synchronised), and the top
operators of a few steps by torch.profiler (self CPU and self device time). A profile, not a benchmark of
quality: the scores are not evaluated.

    python benchmarks/masks_profile.py --device cuda --n-prompts 64 --steps 20 --out masks_profile.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n-prompts", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="optimizer steps timed")
    p.add_argument("--profiled", type=int, default=3, help="of which the last N under torch.profiler")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default="masks_profile.json")
    args = p.parse_args(argv)

    from interp import load
    from interp.circuits import masks
    from interp.circuits.attribute import eap_ig
    from interp.circuits.types import Graph
    from interp.data.tasks import load_task

    dev = args.device
    sync = (lambda: torch.cuda.synchronize()) if dev.startswith("cuda") else (lambda: None)
    model = load(args.model, device=dev)
    task = load_task("ioi", model, n_prompts=args.n_prompts, n_heldout=8, seed=0).score
    graph = Graph.of(model)
    res = {"device": torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu", "torch": torch.__version__,
           "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "args": vars(args), "n_edges": graph.n_edges}  # fmt: skip
    t0 = time.perf_counter()
    warm = eap_ig(model, task, 5)
    sync()
    res["warm_start_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    batches = [masks.EdgeForward(model, part.on(model.device), graph) for part in task.chunks(args.batch)]
    losses = [masks._loss(model, fw, "kl") for fw in batches]
    sync()
    res["setup_s"] = time.perf_counter() - t0
    log_alpha = masks.warm_start(warm.scores, 0.05).to(model.device, torch.float32).requires_grad_(True)
    opt = torch.optim.Adam([log_alpha], lr=0.1)
    gen = torch.Generator().manual_seed(0)

    def step(i: int) -> None:
        z = masks.sample_gates(log_alpha, gen)
        loss = losses[i % len(batches)](batches[i % len(batches)].outputs(z)) + masks.open_probability(log_alpha).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = []
    with torch.enable_grad():
        for i in range(args.steps - args.profiled):
            sync()
            t = time.perf_counter()
            step(i)
            sync()
            times.append(time.perf_counter() - t)
        acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.startswith("cuda") else [])
        with torch.profiler.profile(activities=acts) as prof:
            for i in range(args.profiled):
                step(i)
            sync()
    res["step_s"] = times
    res["median_step_s"] = sorted(times)[len(times) // 2]
    res["steps_per_300_s"] = 300 * res["median_step_s"]
    for key in ("self_cpu_time_total",) + (("self_device_time_total",) if dev.startswith("cuda") else ()):
        table = prof.key_averages().table(sort_by=key, row_limit=25)
        res[f"top_by_{key}"] = table
        print(table, flush=True)
    res["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if dev.startswith("cuda") else None
    print(json.dumps({k: v for k, v in res.items() if not k.startswith("top_") and k != "step_s"}), flush=True)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
