"""Training dynamics, read from a run's logs and checkpoints (not inside interp.train): where the
induction phase change happens, how other metrics change across it (in this run and in control
runs over the same steps), which head is the best induction head at a checkpoint, one head pinned
and followed across checkpoints, and the causal check that ablating the induction heads undoes the
in-context learning."""

from interp.dynamics.ablation import ablated_token_losses, icl_under_ablation
from interp.dynamics.induction import best_induction_head
from interp.dynamics.phase_change import (
    INDUCTION_FORMED,
    change_across,
    compare_across,
    describe_window,
    induction_window,
    jump_window,
    window_rule,
)
from interp.dynamics.pinned import CheckpointHeads, best_head, check_head, checkpoint_heads, parse_head, pinned_rows

__all__ = [
    "INDUCTION_FORMED", "CheckpointHeads", "ablated_token_losses", "best_head", "best_induction_head", "change_across",
    "check_head", "checkpoint_heads", "compare_across", "describe_window", "icl_under_ablation", "induction_window",
    "jump_window", "parse_head", "pinned_rows", "window_rule",
]
