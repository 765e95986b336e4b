"""The whole IOI analysis in one call: prompts -> discovery -> held-out evaluation -> files."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from interp.circuits.discover import Discovery, DiscoveryConfig, discover
from interp.circuits.evaluate import Evaluation, evaluate
from interp.data.ioi import make_ioi
from interp.errors import WorkbenchError

Progress = Callable[[int, int, str], None]


@dataclass
class IOIReport:
    """Discovery on one set of prompts, evaluation on another."""

    model: str  # the model's name
    seed: int  # seed of the prompts
    n_prompts: int  # prompts used for discovery
    n_heldout: int  # held-out prompts used for evaluation
    discovery: Discovery
    evaluation: Evaluation

    def to_json(self) -> dict:
        d, e = self.discovery, self.evaluation
        return {
            "model": self.model,
            "classes": {c: [list(h) for h in hs] for c, hs in d.classes.items()},
            "faithfulness": e.faithfulness,
            "clean_logit_diff": d.clean_logit_diff,
            "corrupted_logit_diff": d.corrupted_logit_diff,
            "heldout_model_logit_diff": e.model_logit_diff,
            "heldout_circuit_logit_diff": e.circuit_logit_diff,
            "n_prompts": self.n_prompts,
            "n_heldout": self.n_heldout,
            "seed": self.seed,
            "incompleteness": None if e.incompleteness != e.incompleteness else e.incompleteness,
            "completeness": e.completeness,
            "minimality": e.minimality,
            "config": asdict(d.config),
        }


def run_ioi(
    model,
    n_prompts: int = 24,
    seed: int = 0,
    n_heldout: int | None = None,
    config: DiscoveryConfig | None = None,
    checks: bool = True,
    progress: Progress | None = None,
) -> IOIReport:
    """Discover the IOI circuit on `n_prompts` prompts and evaluate it on `n_heldout` others."""
    if n_prompts < 1:
        raise WorkbenchError(f"--n-prompts must be at least 1 (got {n_prompts})")
    n_heldout = n_prompts if n_heldout is None else n_heldout
    if n_heldout < 1:
        raise WorkbenchError(f"held-out prompts must be at least 1 (got {n_heldout})")
    if model.info.n_layers < 4:
        raise WorkbenchError(
            f"{model.info.name} has {model.info.n_layers} layers; the IOI circuit needs at least 4 (use a deeper model)"
        )
    ds = make_ioi(model, n_prompts + n_heldout, seed=seed)
    found, heldout = ds.split(n_prompts)
    disc = discover(model, found, config, progress=progress)
    if not disc.classes:
        raise WorkbenchError(
            f"no IOI heads found in {model.info.name} (clean logit diff {disc.clean_logit_diff:.2f}); "
            "the model may not do IOI, or lower the DiscoveryConfig thresholds"
        )
    ev = evaluate(model, heldout, disc.classes, checks=checks, seed=seed, progress=progress)
    return IOIReport(model.info.name, seed, n_prompts, n_heldout, disc, ev)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_report(report: IOIReport, out: Path, n_layers: int, n_heads: int) -> list[Path]:
    """circuit.json and the figures (path-patching heatmaps, the circuit graph) into `out`."""
    from interp.viz.circuits import circuit_graph, patching_heatmap
    from interp.viz.html import write_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "circuit.json"]
    _write_atomic(written[0], json.dumps(report.to_json(), indent=2))
    for name, effect in report.discovery.effects.items():
        fig = patching_heatmap(effect.nan_to_num(0.0), f"Path patching to {name} ({report.model})")
        path = out / f"path_{name.replace(' ', '_').replace('/', '_')}.html"
        write_figure(fig, path)
        written.append(path)
    fig = circuit_graph(report.discovery.classes, n_layers, f"IOI circuit in {report.model}")
    write_figure(fig, out / "circuit.html")
    written.append(out / "circuit.html")
    return written
