"""The whole IOI analysis in one call: prompts -> discovery -> held-out evaluation -> files.

Discovery runs on the "discovery" part of the IOI data and evaluation on the "evaluation" part:
disjoint halves of the templates and of the names (interp.data.ioi.ioi_split, the one IOI split), so
the held-out prompts are sentences and names discovery never saw."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from interp.circuits.discover import N_DISCOVERY, Discovery, DiscoveryConfig, check_depth, discover
from interp.circuits.evaluate import N_ABC, Evaluation, evaluate
from interp.circuits.head_configs import CLASS_POSITIONS
from interp.data.ioi import BASE_TEMPLATES, NAMES, OBJECTS, PLACES, ioi_split, single_token_words
from interp.errors import WorkbenchError
from interp.io import write_json
from interp.stats import Interval
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
    corruption: str = "abc"  # the counterfactual path patching runs on (interp.data.ioi's CORRUPTIONS)

    def to_json(self) -> dict:
        d, e = self.discovery, self.evaluation

        def value(x):  # an Interval's value (a bare float as it is)
            return getattr(x, "value", x)

        def ci(x):  # its interval, None where there is none
            return [x.lo, x.hi] if isinstance(x, Interval) else None

        return {
            "model": self.model,
            "classes": {c: [list(h) for h in hs] for c, hs in d.classes.items()},
            "ranked": [{"head": list(h), "class": c} for h, c in d.ranked],  # the order discovery admitted them
            "corruption": self.corruption,  # path patching's counterfactual (evaluation mean-ablates with ABC means)
            "faithfulness_curve": e.curve,  # F(first k ranked heads) / F(M), each kept at its class's positions
            "faithfulness": value(e.faithfulness),  # F(C) / F(M), each class kept at its positions (Wang et al.)
            "faithfulness_formula": "F(C) / F(M)",  # interp.circuits.types.logit_diff_ratio
            "faithfulness_ci": ci(e.faithfulness),  # 95% bootstrap interval over the held-out prompts
            "faithfulness_all_positions": value(e.faithfulness_all_positions),
            "places": e.places,  # "layer.head" -> segments it is kept at (interp.circuits.positions); null: class positions
            "faithfulness_class_positions": value(e.faithfulness_class_positions),  # with places: at class positions only
            "faithfulness_class_positions_ci": ci(e.faithfulness_class_positions),
            "by_template": e.by_template,  # F(M), F(C), F(C)/F(M) per held-out base template
            "faithfulness_all_positions_ci": ci(e.faithfulness_all_positions),
            "clean_logit_diff": d.clean_logit_diff,
            "corrupted_logit_diff": d.corrupted_logit_diff,
            "heldout_model_logit_diff": value(e.model_logit_diff),
            "heldout_model_logit_diff_ci": ci(e.model_logit_diff),
            "heldout_circuit_logit_diff": value(e.circuit_logit_diff),
            "heldout_circuit_logit_diff_ci": ci(e.circuit_logit_diff),
            "heldout_circuit_logit_diff_all_positions": value(e.circuit_logit_diff_all_positions),
            "heldout_circuit_logit_diff_all_positions_ci": ci(e.circuit_logit_diff_all_positions),
            "n_prompts": self.n_prompts,
            "n_heldout": self.n_heldout,
            "n_abc": e.n_abc,
            "seed": self.seed,
            "class_positions": {c: CLASS_POSITIONS.get(c, "all") for c in d.classes},
            "split": {"discovery": {"templates": d.templates, "names": d.names},
                      "evaluation": {"templates": e.templates, "names": e.names}},
            "incompleteness": value(e.incompleteness),
            "incompleteness_ci": ci(e.incompleteness),
            "completeness": e.completeness,
            "minimality": e.minimality,
            "min_minimality": e.min_minimality,
            "minimality_noise": e.noise,  # the same measure for heads outside the circuit
            "config": asdict(d.config),
            "effects": effects_json(d.effects),  # step -> layer x head normalized path effect (null: not patched)
        }


def effects_json(effects: dict) -> dict:
    """Discovery's path-patching effects (step -> layer x head tensor) as JSON lists, NaN (a head the
    step did not patch) as null: circuit.json keeps them, so its graph can weigh its edges when read back."""
    import math

    return {name: [[None if math.isnan(v) else float(v) for v in row] for row in grid.tolist()]
            for name, grid in effects.items()}  # fmt: skip


def check_sizes(n_prompts: int, n_heldout: int | None) -> int:
    """The number of held-out prompts (default: as many as for discovery), both checked."""
    if n_prompts < 1:
        raise WorkbenchError(f"discovery needs at least 1 prompt (got {n_prompts})")
    n_heldout = n_prompts if n_heldout is None else n_heldout
    if n_heldout < 1:
        raise WorkbenchError(f"evaluation needs at least 1 held-out prompt (got {n_heldout})")
    return n_heldout


def longest_prompt(model: Model) -> int:
    """Tokens in the longest IOI prompt (any template, the longest filler words)."""
    def longest_word(words: list[str]) -> str:
        return max(single_token_words(model.tokenizer, words, strict=False, what="word") or words, key=len)

    longest = {k: longest_word(words) for k, words in (("[A]", NAMES), ("[PLACE]", PLACES), ("[OBJECT]", OBJECTS))}
    n = 0
    for t in BASE_TEMPLATES:
        text = t.replace("[X]", longest["[A]"]).replace("[Y]", longest["[A]"]).replace("[S]", longest["[A]"])
        text = text.replace("[PLACE]", longest["[PLACE]"]).replace("[OBJECT]", longest["[OBJECT]"])
        n = max(n, len(model.tokenizer.encode(text)) + 1)
    return n


def memory_needed(model: Model, n_prompts: int, n_heldout: int, n_pos: int) -> tuple[int, int]:
    """(discovery, evaluation) bytes, a lower bound: the clean cache path patching keeps (residual
    stream three times, q/k/v/z and their rotations, rotary tables and attention patterns per
    layer, plus the corrupted z), and for evaluation the ABC means and the two base runs'
    residual streams of the held-out prompts and one replay pass."""
    i = model.info
    size = torch.empty((), dtype=model.dtype).element_size()
    qz, kv = i.n_heads * i.d_head, i.n_kv_heads * i.d_head
    per_layer = 3 * i.d_model + 3 * qz + 3 * kv + 2 * i.d_head + i.n_heads * n_pos + qz
    discovery = n_prompts * n_pos * (i.n_layers * per_layer + i.d_model) * size
    mlp = i.d_mlp or 4 * i.d_model
    evaluation = n_heldout * n_pos * (i.n_layers * (qz + 2 * i.d_model) + 4 * i.d_model + 3 * mlp) * size
    return discovery, evaluation


def check_memory(model: Model, n_prompts: int, n_heldout: int) -> None:
    """Refuse prompt counts whose caches cannot fit in the device's free memory."""
    from interp.models.device import available_bytes

    have = available_bytes(torch.device(model.device))
    if have is None:
        return
    n_pos = longest_prompt(model)
    discovery, evaluation = memory_needed(model, n_prompts, n_heldout, n_pos)
    for what, n, need in (("discovery", n_prompts, discovery), ("evaluation", n_heldout, evaluation)):
        if need > have:
            fit = max(1, int(n * have / need))
            raise WorkbenchError(
                f"{n:,} {what} prompts need at least {need / 2**30:,.1f} GiB on {model.device} but {have / 2**30:,.1f} GiB "
                f"are free; use at most about {fit:,} {what} prompts"
            )


def run_ioi(
    model: Model,
    n_prompts: int = N_DISCOVERY,
    seed: int = 0,
    n_heldout: int | None = None,
    config: DiscoveryConfig | None = None,
    checks: bool = True,
    n_abc: int = N_ABC,
    progress: Progress | None = None,
    corruption: str = "abc",
    validation: bool = False,
) -> IOIReport:
    """Discover the IOI circuit on `n_prompts` prompts of the discovery part, path patching from
    `corruption`, and evaluate it on `n_heldout` prompts of the evaluation part (other templates,
    other names). validation=True stays inside the discovery part (search, then validation
    prompts: `ioi_split`), for choosing settings."""
    n_heldout = check_sizes(n_prompts, n_heldout)
    check_depth(model)  # before any prompt is made
    check_memory(model, n_prompts, n_heldout)
    split = ioi_split(model, n_prompts, n_heldout, seed, corruption=corruption, heldout_corruption="abc",
                      validation=validation)  # fmt: skip
    found, heldout = split.score, split.heldout
    disc = discover(model, found, config, progress=progress)
    if not disc.classes:
        raise WorkbenchError(
            f"no IOI heads found in {model.info.name} (clean logit diff {disc.clean_logit_diff:.2f}); "
            f"the model may not do IOI, or lower --threshold (now {disc.config.threshold})"
        )
    ev = evaluate(model, heldout, disc.classes, checks=checks, n_abc=n_abc, seed=seed, progress=progress,
                  ranked=disc.ranked, places=disc.places)  # fmt: skip
    return IOIReport(model.info.name, seed, n_prompts, n_heldout, disc, ev, corruption)


def write_report(report: IOIReport, out: Path, n_layers: int, n_heads: int) -> list[Path]:
    """circuit.json and the figures (path-patching heatmaps, the circuit graph) into `out`."""
    from interp.viz.circuits import circuit_graph, faithfulness_by_heads, patching_heatmap
    from interp.viz.html import write_figure

    out = Path(out)
    written = [write_json(out / "circuit.json", report.to_json(), indent=2)]
    for name, effect in report.discovery.effects.items():
        fig = patching_heatmap(effect.nan_to_num(0.0), f"Path patching to {name} ({report.model})")
        path = out / f"path_{name.replace(' ', '_').replace('/', '_')}.html"
        write_figure(fig, path)
        written.append(path)
    fig = circuit_graph(report.discovery.classes, n_layers, f"IOI circuit in {report.model}",
                        effects=report.discovery.effects, positions=CLASS_POSITIONS)  # fmt: skip
    write_figure(fig, out / "circuit.html")
    written.append(out / "circuit.html")
    if report.evaluation.curve:
        write_figure(faithfulness_by_heads(report.evaluation.curve, f"Faithfulness against heads kept ({report.model})"),
                     out / "faithfulness_curve.html")  # fmt: skip
        written.append(out / "faithfulness_curve.html")
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
