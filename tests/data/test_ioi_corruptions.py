"""IOI's opt-in corruptions: which name goes where, the clean prompts untouched, load_task's option."""

from __future__ import annotations

import pytest
import torch

from interp.data.ioi import CORRUPTIONS, make_ioi
from interp.data.tasks import load_task
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
        assert ds.prompts == base.prompts and torch.equal(ds.tokens, base.tokens)  # the same clean prompts
        assert ds.corrupted_tokens.shape == ds.tokens.shape
        for i in range(len(ds)):
            io, s = int(ds.io_ids[i]), int(ds.s_ids[i])
            # every other token is the clean prompt's (only the three name slots change)
            slots = [int(ds.positions[k][i]) for k in ("IO", "S1", "S2")]
            other = torch.ones(ds.tokens.shape[1], dtype=torch.bool)
            other[slots] = False
            assert torch.equal(ds.corrupted_tokens[i][other], ds.tokens[i][other])
            c_io, c_s1, c_s2 = _names_at(ds.corrupted_tokens, ds, i)
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
    split = load_task("ioi", tiny_llama, 6, 5, seed=3, corruption="s2-io")
    default = load_task("ioi", tiny_llama, 6, 5, seed=3)
    assert split.score.prompts == default.score.prompts and split.score.corrupted_prompts != default.score.corrupted_prompts
    # the held-out prompts keep ABC, so faithfulness means the same whatever scored the edges
    assert split.heldout.corrupted_prompts == default.heldout.corrupted_prompts
    rows = torch.arange(6)
    assert (split.score.corrupted.cpu()[rows, split.score.positions["S2"]] == split.score.answers).all()
    with pytest.raises(WorkbenchError, match="IOI option"):
        load_task("induction", tiny_gpt2, 2, 2, corruption="s2-io")
