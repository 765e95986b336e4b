"""Circuits: IOI metrics, activation and path patching, circuit discovery and evaluation.

from interp.circuits import make_ioi, path_patch, Receivers, discover, evaluate, run_ioi
"""

from interp.circuits.activation import patch_head_set, patch_heads, patch_resid
from interp.circuits.discover import CLASSES, Discovery, DiscoveryConfig, discover
from interp.circuits.evaluate import Evaluation, abc_means, ablated_logit_diff, evaluate
from interp.circuits.metrics import logit_diff, logit_diff_at, normalized
from interp.circuits.path import PathResult, Receivers, all_heads, path_patch
from interp.circuits.path_reference import path_patch_reference
from interp.circuits.pipeline import IOIReport, run_ioi, write_report
from interp.data.ioi import IOIDataset, make_ioi

__all__ = [
    "CLASSES", "Discovery", "DiscoveryConfig", "Evaluation", "IOIDataset", "IOIReport", "PathResult", "Receivers",
    "abc_means", "ablated_logit_diff", "all_heads", "discover", "evaluate", "logit_diff", "logit_diff_at", "make_ioi",
    "normalized", "patch_head_set", "patch_heads", "patch_resid", "path_patch", "path_patch_reference", "run_ioi",
    "write_report",
]  # fmt: skip
