"""IOI's corruptions: which name goes where, the clean prompts untouched, load_task's option."""

from __future__ import annotations

import pytest
import torch

from interp.data.ioi import CORRUPTIONS, make_ioi
from interp.data.tasks import IOI_CORRUPTION, ioi_task, load_task
from interp.errors import WorkbenchError


def _names_at(tokens, ds, i):
    p = {k: int(v[i]) for k, v in ds.positions.items()}
    return tokens[i, p["IO"]].item(), tokens[i, p["S1"]].item(), tokens[i, p["S2"]].item()


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_each_corruption_puts_the_right_names_in_the_slots(fixture, request):
    model = request.getfixturevalue(fixture)
    base = make_ioi(model, 24, seed=2)
    for corruption in CORRUPTIONS:
        ds = make_ioi(model, 24, seed=2, corruption=corruption)
        assert ds.prompts == base.prompts and torch.equal(ds.clean, base.clean)  # the same clean prompts
        assert ds.corrupted.shape == ds.clean.shape
        for i in range(len(ds)):
            io, s = int(ds.answers[i]), int(ds.distractors[i])
            # every other token is the clean prompt's (only the three name slots change)
            slots = [int(ds.positions[k][i]) for k in ("IO", "S1", "S2")]
            other = torch.ones(ds.clean.shape[1], dtype=torch.bool)
            other[slots] = False
            assert torch.equal(ds.corrupted[i][other], ds.clean[i][other])
            c_io, c_s1, c_s2 = _names_at(ds.corrupted, ds, i)
            if corruption == "abc":
                assert len({c_io, c_s1, c_s2}) == 3 and not {c_io, c_s1, c_s2} & {io, s}
                assert ds.corrupted_prompts == base.corrupted_prompts  # the default is unchanged
            elif corruption == "s2-io":  # MIB's s2_io_flip: S2 becomes IO, so the answer flips to S
                assert (c_io, c_s1, c_s2) == (io, s, io)
            else:  # new-s: IO kept, both S replaced by one new name
                assert c_io == io and c_s1 == c_s2 and c_s1 not in (io, s)


def test_unknown_corruption_and_load_task_option(tiny_llama, tiny_gpt2):
    with pytest.raises(WorkbenchError, match="unknown IOI corruption 'xyz'"):
        make_ioi(tiny_llama, 4, corruption="xyz")
    default = load_task("ioi", tiny_llama, 6, 5, seed=3)
    abc = load_task("ioi", tiny_llama, 6, 5, seed=3, corruption="abc")
    # the circuit task's default is MIB's counterfactual (S2 -> IO), on both sides: a circuit is
    # judged by the counterfactual it was found with
    assert IOI_CORRUPTION == "s2-io"
    for side in ("score", "heldout"):
        d, a = getattr(default, side), getattr(abc, side)
        assert d.corruption == "s2-io" and a.corruption == "abc"
        assert d.prompts == a.prompts and d.corrupted_prompts != a.corrupted_prompts
        rows = torch.arange(len(d))
        assert (d.corrupted.cpu()[rows, d.positions["S2"]] == d.answers).all()  # S2 now names IO
        assert (a.corrupted.cpu()[rows, a.positions["S2"]] != a.distractors).all()
        part = "evaluation" if side == "heldout" else "discovery"  # the one IOI split (interp.data.ioi.ioi_split)
        assert a.corrupted_prompts == make_ioi(tiny_llama, len(a), seed=3, part=part).corrupted_prompts
    # the two sides can still differ when asked (scores found with one counterfactual, judged by another)
    mixed = ioi_task(tiny_llama, 6, 5, seed=3, corruption="s2-io", heldout_corruption="abc")
    assert mixed.score.corrupted_prompts == default.score.corrupted_prompts
    assert mixed.heldout.corrupted_prompts == abc.heldout.corrupted_prompts
    with pytest.raises(WorkbenchError, match="IOI option"):
        load_task("induction", tiny_gpt2, 2, 2, corruption="s2-io")
