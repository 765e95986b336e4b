"""Head detectors (previous-token, duplicate-token, induction) with copying and causal checks."""

from interp.heads.detect import KINDS, head_scores, top_heads
from interp.heads.find import FindConfig, HeadFinding, HeadsReport, find_heads, heads_report
from interp.heads.patterns import PATTERNS, register_pattern

__all__ = ["KINDS", "PATTERNS", "FindConfig", "HeadFinding", "HeadsReport", "find_heads", "head_scores", "heads_report", "register_pattern", "top_heads"]
