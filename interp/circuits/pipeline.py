"""The whole IOI analysis in one call: prompts -> discovery -> held-out evaluation -> files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from interp.circuits.discover import Discovery, DiscoveryConfig, discover
from interp.circuits.evaluate import Evaluation, evaluate
from interp.data.ioi import make_ioi
from interp.errors import WorkbenchError
from interp.io import write_json
from interp.types import Progress

if TYPE_CHECKING:
    from interp.models import Model


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


def check_sizes(n_prompts: int, n_heldout: int | None) -> int:
    """The number of held-out prompts (default: as many as for discovery), both checked."""
    if n_prompts < 1:
        raise WorkbenchError(f"discovery needs at least 1 prompt (got {n_prompts})")
    n_heldout = n_prompts if n_heldout is None else n_heldout
    if n_heldout < 1:
        raise WorkbenchError(f"evaluation needs at least 1 held-out prompt (got {n_heldout})")
    return n_heldout


def run_ioi(
    model: Model,
    n_prompts: int = 24,
    seed: int = 0,
    n_heldout: int | None = None,
    config: DiscoveryConfig | None = None,
    checks: bool = True,
    progress: Progress | None = None,
) -> IOIReport:
    """Discover the IOI circuit on `n_prompts` prompts and evaluate it on `n_heldout` others."""
    n_heldout = check_sizes(n_prompts, n_heldout)
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


def write_report(report: IOIReport, out: Path, n_layers: int, n_heads: int) -> list[Path]:
    """circuit.json and the figures (path-patching heatmaps, the circuit graph) into `out`."""
    from interp.viz.circuits import circuit_graph, patching_heatmap
    from interp.viz.html import write_figure

    out = Path(out)
    written = [write_json(out / "circuit.json", report.to_json(), indent=2)]
    for name, effect in report.discovery.effects.items():
        fig = patching_heatmap(effect.nan_to_num(0.0), f"Path patching to {name} ({report.model})")
        path = out / f"path_{name.replace(' ', '_').replace('/', '_')}.html"
        write_figure(fig, path)
        written.append(path)
    fig = circuit_graph(report.discovery.classes, n_layers, f"IOI circuit in {report.model}")
    write_figure(fig, out / "circuit.html")
    written.append(out / "circuit.html")
    return written


def read_circuit(path: str | Path, model: Model) -> dict:
    """circuit.json (written by `interp ioi`) as a dict, its heads checked against the model."""
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "circuit.json"
    try:
        data = json.loads(file.read_text())
        classes = {c: [(int(h[0]), int(h[1])) for h in hs] for c, hs in data["classes"].items()}
    except FileNotFoundError:
        raise WorkbenchError(f"no circuit file at {str(file)!r}; make one first (`interp ioi`, or discovery here)") from None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise WorkbenchError(f"{str(file)!r} is not a readable circuit.json ({type(e).__name__}: {e})") from e
    info = model.info
    bad = [h for hs in classes.values() for h in hs if not (0 <= h[0] < info.n_layers and 0 <= h[1] < info.n_heads)]
    if bad:
        raise WorkbenchError(f"{str(file)!r} names heads {bad[:3]} that {info.name} does not have; pick the model it was made for")
    return {**data, "classes": classes}
