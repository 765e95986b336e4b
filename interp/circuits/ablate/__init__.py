"""The one ablation engine: plans (which writer is replaced where, by what) run on the replayed block.

    from interp.circuits.ablate import Ablator, AblationPlan
    ab = Ablator(model, heldout, "counterfactual")        # or "mean" (with mean_task), or replacement=...
    ab.run_many([AblationPlan(edges=keep) for keep in circuits])   # [plan batch] metric per prompt

interp.circuits.ablate.plan says what a plan is, .engine how plans run (two strategies behind
`run_many`), .layout how an edge plan's inputs are rebuilt, .runs the runs replays start from, and
.reference the plain hooked version tests hold the engine to.
"""

from interp.circuits.ablate.engine import Ablator
from interp.circuits.ablate.plan import AblationPlan, Replacement
from interp.circuits.ablate.reference import ablated_reference, plan_reference

__all__ = ["AblationPlan", "Ablator", "Replacement", "ablated_reference", "plan_reference"]
