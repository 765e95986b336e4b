"""Training dynamics, read from a run's logs and checkpoints (not inside interp.train): where the
induction phase change happens, how other metrics change across it (in this run and in control
runs over the same steps), which head is the best induction head at a checkpoint, and the causal
check that ablating the induction heads undoes the in-context learning."""

from interp.dynamics.ablation import ablated_token_losses, icl_under_ablation
from interp.dynamics.induction import best_induction_head
from interp.dynamics.phase_change import INDUCTION_FORMED, change_across, compare_across, induction_window, jump_window

__all__ = [
    "INDUCTION_FORMED", "ablated_token_losses", "best_induction_head", "change_across", "compare_across",
    "icl_under_ablation", "induction_window", "jump_window",
]
