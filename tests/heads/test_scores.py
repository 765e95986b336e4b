"""Pattern scores on hand-made attention patterns, and the fast path against the reference."""

from __future__ import annotations

import pytest
import torch

from interp.heads.patterns import PATTERNS, expected_patterns, register_pattern
from interp.heads.scores import fast_scores, reference_scores

KINDS = ("previous-token", "duplicate-token", "induction")


def test_expected_patterns_on_a_known_sequence():
    tokens = torch.tensor([[9, 1, 2, 1, 2]])  # BOS, a b a b
    prev = PATTERNS["previous-token"](tokens)[0]
    dup = PATTERNS["duplicate-token"](tokens)[0]
    ind = PATTERNS["induction"](tokens)[0]
    assert prev.nonzero().tolist() == [[1, 0], [2, 1], [3, 2], [4, 3]]
    assert dup.nonzero().tolist() == [[3, 1], [4, 2]]  # second a -> first a, second b -> first b
    assert ind.nonzero().tolist() == [[3, 2], [4, 3]]  # the token after each earlier copy


def test_tl_names_are_aliases():
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 5, (2, 9), generator=gen)
    pattern = torch.randn(2, 3, 9, 9, generator=gen).masked_fill(torch.ones(9, 9).triu(1).bool(), float("-inf")).softmax(-1)
    exp = expected_patterns(tokens, KINDS)
    for alias, name in (("mul", "tl-mul"), ("abs", "tl-abs")):
        assert torch.equal(fast_scores(pattern, exp, measure=alias), fast_scores(pattern, exp, measure=name))
    with pytest.raises(ValueError, match="unknown score measure"):
        fast_scores(pattern, exp, measure="max")


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_pattern("induction")(lambda tokens: tokens)


def _one_hot_rows(targets: list[int], pos: int) -> torch.Tensor:
    a = torch.zeros(pos, pos)
    for i, j in enumerate(targets):
        a[i, j] = 1.0
    return a


def test_hand_made_patterns_give_exact_scores():
    tokens = torch.tensor([[9, 1, 2, 1, 2]])
    exp = expected_patterns(tokens, KINDS)
    perfect_prev = _one_hot_rows([0, 0, 1, 2, 3], 5)  # row 0 must attend to BOS itself
    perfect_ind = _one_hot_rows([0, 0, 0, 2, 3], 5)
    bos_only = _one_hot_rows([0, 0, 0, 0, 0], 5)
    half = 0.5 * perfect_ind + 0.5 * bos_only  # half on the induction target in rows 3, 4
    pattern = torch.stack([perfect_prev, perfect_ind, bos_only, half])[None]  # [1 head=4 5 5]
    # target (the default): mean attention on the target over the rows that have one; a perfect
    # head scores 1 whatever its kind (previous-token: rows 1..4; induction: rows 3, 4)
    s = fast_scores(pattern, exp)  # [kind head]
    assert s[0].tolist() == pytest.approx([1.0, 3 / 4, 1 / 4, 2 / 4], abs=1e-7)
    assert s[2].tolist() == pytest.approx([1.0, 1.0, 0.0, 0.5], abs=1e-7)  # rows 3, 4: i-1 is the target here
    assert s[1].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0], abs=1e-7)  # duplicate: rows 3, 4 look at 1, 2
    # mul: attention mass on expected cells / total mass (= 5 rows): ceilings differ by kind
    s = fast_scores(pattern, exp, measure="mul")
    assert s[0].tolist() == pytest.approx([4 / 5, 3 / 5, 1 / 5, 2 / 5], abs=1e-7)
    assert s[2].tolist() == pytest.approx([2 / 5, 2 / 5, 0, 1 / 5], abs=1e-7)
    # exclude BOS: rows 0..2 of perfect_ind attend only to BOS, so 2 of the 2 remaining units match
    s = fast_scores(pattern, exp, exclude_bos=True, measure="mul")
    assert s[2, 1].item() == pytest.approx(1.0, abs=1e-7)
    assert s[2, 3].item() == pytest.approx(1.0, abs=1e-7)
    # target with exclude BOS: the row's non-BOS attention is what is shared out; previous-token
    # row 1's only target is BOS, so that row has no target any more
    s = fast_scores(pattern, exp, exclude_bos=True)
    assert s[0, 0].item() == pytest.approx(1.0, abs=1e-7)  # rows 2..4, all on target
    assert s[2, 3].item() == pytest.approx(1.0, abs=1e-7)  # half's rows 3, 4: all non-BOS mass on target
    # abs: 1 - sum|A - D| / pos; perfect_prev vs previous-token: only row 0 differs (|1 - 0|)
    s = fast_scores(pattern, exp, measure="abs")
    assert s[0, 0].item() == pytest.approx(1 - 1 / 5, abs=1e-7)
    # bos_only vs induction: 5 ones off target + 2 missed targets
    assert s[2, 2].item() == pytest.approx(1 - 7 / 5, abs=1e-7)


def test_target_pools_rows_over_sequences():
    """Each row with a target counts once, whichever sequence it is in."""
    tokens = torch.tensor([[9, 1, 2, 1, 2], [9, 3, 4, 5, 6]])  # the second has no repeat: no induction rows
    exp = expected_patterns(tokens, ("induction",))
    pattern = torch.stack([_one_hot_rows([0, 0, 0, 2, 3], 5), _one_hot_rows([0, 0, 0, 0, 0], 5)])[:, None]
    assert fast_scores(pattern, exp)[0, 0].item() == pytest.approx(1.0)  # mul would average 0.4 and 0
    assert fast_scores(pattern, exp, measure="mul")[0, 0].item() == pytest.approx(0.2)
    assert fast_scores(pattern[1:], exp[1:])[0, 0].item() == 0.0  # no row with a target: 0


@pytest.mark.parametrize("measure", ["target", "mul", "abs"])
@pytest.mark.parametrize("exclude_bos", [False, True])
@pytest.mark.parametrize("exclude_current", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fast_scores_match_the_reference(measure, exclude_bos, exclude_current, dtype):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 6, (3, 12), generator=gen)  # small vocabulary: many repeats
    logits = torch.randn(3, 4, 12, 12, generator=gen) * 3
    pattern = logits.masked_fill(torch.ones(12, 12).triu(1).bool(), float("-inf")).softmax(-1).to(dtype)
    exp = expected_patterns(tokens, KINDS)
    opts = {"exclude_bos": exclude_bos, "exclude_current_token": exclude_current, "measure": measure}
    fast = fast_scores(pattern, exp, **opts)
    for k in range(len(KINDS)):
        ref = reference_scores(pattern, exp[:, k], **opts).float()  # the same low-precision pattern
        torch.testing.assert_close(fast[k], ref, atol=1e-5, rtol=0)
        assert ref.abs().max() > 0.01  # not vacuous
