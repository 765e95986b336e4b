"""Circuits, both wings on one vocabulary (interp.circuits.types) and one engine (the replayed block of
interp.circuits.replay, the ablation engine of interp.circuits.ablate):

- the IOI circuit by path patching (Wang et al. 2022): `path_patch`, `discover`, `evaluate`, `run_ioi`;
- edge circuits for any task, scored by a registered method (`score_edges`: eap, eap-ig, exact) and
  judged by MIB's faithfulness curves (`faithfulness_curve`), in one call: `find_circuit`.

    from interp.circuits import run_ioi, find_circuit, score_edges, faithfulness_curve
"""

from interp.circuits.ablate import AblationPlan, Ablator, Replacement, ablated_reference, plan_reference
from interp.circuits.activation import patch_head_set, patch_heads, patch_resid
from interp.circuits.discover import CLASSES, Discovery, DiscoveryConfig, discover
from interp.circuits.edges import edge_effects, edge_effects_reference
from interp.circuits.evaluate import Evaluation, abc_means, evaluate
from interp.circuits.faithfulness import MIB_PERCENTS, faithfulness, faithfulness_curve
from interp.circuits.head_configs import ablated_logit_diff
from interp.circuits.io import read_edges, write_edges
from interp.circuits.methods import register, score_edges
from interp.circuits.path import PatchCaches, PathResult, Receivers, all_heads, path_patch
from interp.circuits.path_reference import path_patch_reference
from interp.circuits.pipeline import IOIReport, run_ioi, write_report
from interp.circuits.report import CircuitReport, find_circuit, write_circuit
from interp.circuits.select import greedy_order
from interp.circuits.types import (
    Curve,
    Edge,
    EdgeScores,
    Graph,
    Interval,
    Node,
    Reader,
    logit_diff_ratio,
    normalized_faithfulness,
    prune,
)
from interp.data.ioi import ioi_split, make_ioi
from interp.data.task import normalized, resid_metric

__all__ = [
    "CLASSES", "AblationPlan", "Ablator", "CircuitReport", "Curve", "Discovery", "DiscoveryConfig", "Edge",
    "EdgeScores", "Evaluation", "Graph", "IOIReport", "Interval", "MIB_PERCENTS", "Node", "PatchCaches", "PathResult",
    "Reader", "Receivers", "Replacement", "abc_means", "ablated_logit_diff", "ablated_reference", "all_heads",
    "discover", "edge_effects", "edge_effects_reference", "evaluate", "faithfulness", "faithfulness_curve",
    "find_circuit", "greedy_order", "ioi_split", "logit_diff_ratio", "make_ioi", "normalized",
    "normalized_faithfulness", "patch_head_set", "patch_heads", "patch_resid", "path_patch", "path_patch_reference",
    "plan_reference", "prune", "read_edges", "register", "resid_metric", "run_ioi", "score_edges", "write_circuit",
    "write_edges", "write_report",
]  # fmt: skip
