"""IOI prompts: single-token names, positions that point at the right tokens, seeds that reproduce."""

from __future__ import annotations

import pytest
import torch

from interp.data.ioi import BASE_TEMPLATES, NAMES, expand_templates, make_ioi, single_token_words
from interp.errors import WorkbenchError


def test_templates_cover_both_orders():
    assert len(BASE_TEMPLATES) >= 15
    expanded = expand_templates(BASE_TEMPLATES)
    assert len(expanded) == 2 * len(BASE_TEMPLATES)
    abba, baba = expanded[0], expanded[1]
    assert abba.index("[A]") < abba.index("[B]") and baba.index("[B]") < baba.index("[A]")


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_positions_point_at_the_right_tokens_for_every_template(fixture, request):
    model = request.getfixturevalue(fixture)
    n_templates = 2 * len(BASE_TEMPLATES)
    ds = make_ioi(model, 2 * n_templates, seed=3)
    assert set(ds.groups.tolist()) == set(range(n_templates))  # every template, both orders
    assert len(set(ds.lengths.tolist())) > 1  # templates really differ in length
    tok = model.tokenizer
    for i in range(len(ds)):
        ids = ds.clean[i].tolist()
        p = {k: int(v[i]) for k, v in ds.positions.items()}
        io, s = int(ds.answers[i]), int(ds.distractors[i])
        assert ids[p["IO"]] == io and ids[p["S1"]] == s and ids[p["S2"]] == s
        assert p["S1+1"] == p["S1"] + 1 and p["S1"] < p["S2"] < p["END"]
        # END is the last real token: decoding up to it gives back the prompt
        assert tok.decode(ids[1 : p["END"] + 1]) == ds.prompts[i]
        assert tok.decode([ids[p["END"]]]).strip() == ds.prompts[i].split()[-1]
        # the ABC prompt has three different names at the same places, and the same length
        c = ds.corrupted[i].tolist()
        names = {c[p["IO"]], c[p["S1"]], c[p["S2"]]}
        assert len(names) == 3 and not names & {io, s}
        assert tok.decode(c[1 : p["END"] + 1]) == ds.corrupted_prompts[i]


def test_names_are_single_tokens(tiny_gpt2, smollm2):
    for model in (tiny_gpt2, smollm2):
        ds = make_ioi(model, 20, seed=0)
        for t in torch.cat([ds.answers, ds.distractors]).tolist():
            word = model.tokenizer.decode([t])
            assert word.startswith(" ") and model.tokenizer.encode(word, add_special_tokens=False) == [t]
        assert ds.clean[0, 0].item() == model.tokenizer.bos_token_id  # BOS first (<|endoftext|> / <|im_start|>)
    kept = single_token_words(tiny_gpt2.tokenizer, NAMES, strict=False, what="name")
    assert 10 <= len(kept) <= len(NAMES)


def test_seeds_reproduce(tiny_gpt2):
    a, b, c = (make_ioi(tiny_gpt2, 12, seed=s) for s in (5, 5, 6))
    assert a.prompts == b.prompts and torch.equal(a.clean, b.clean) and a.corrupted_prompts == b.corrupted_prompts
    assert a.prompts != c.prompts


def test_bad_input(tiny_gpt2):
    with pytest.raises(WorkbenchError, match="one token"):
        make_ioi(tiny_gpt2, 4, names=["Mary", "John", "Bartholomew-Xanthippe", "Tom", "Dan"])
    with pytest.raises(WorkbenchError, match="at least 1"):
        make_ioi(tiny_gpt2, 0)
    with pytest.raises(WorkbenchError, match=r"\[S\]"):
        make_ioi(tiny_gpt2, 4, templates=["Then, [X] and [Y] went home. They said to"])


def test_split_keeps_positions(tiny_llama):
    ds = make_ioi(tiny_llama, 10, seed=1)
    a, b = ds.split(6)
    assert len(a) == 6 and len(b) == 4
    assert b.prompts == ds.prompts[6:]
    assert torch.equal(b.positions["END"], ds.positions["END"][6:])
    assert b.clean.shape[1] == int(b.lengths.max())


def test_discovery_and_evaluation_parts_share_no_template_and_no_name(tiny_gpt2):
    found = make_ioi(tiny_gpt2, 12, seed=1, part="discovery")
    held = make_ioi(tiny_gpt2, 12, seed=1, part="evaluation")
    assert found.source["templates"] == BASE_TEMPLATES[0::2] and held.source["templates"] == BASE_TEMPLATES[1::2]
    assert not set(found.source["templates"]) & set(held.source["templates"])
    assert found.source["names"] and held.source["names"] and not set(found.source["names"]) & set(held.source["names"])
    assert set(found.source["names"]) <= set(NAMES[0::2]) and set(held.source["names"]) <= set(NAMES[1::2])
    for ds in (found, held):  # every name in a prompt (clean or ABC) comes from the part's half
        words = {w.strip(".,") for p in ds.prompts + ds.corrupted_prompts for w in p.split()}
        assert words & set(NAMES) <= set(ds.source["names"])
    assert found.subset([0, 1]).source["names"] == found.source["names"] and found.subset([0]).source["part"] == "discovery"
    with pytest.raises(WorkbenchError, match="unknown IOI part"):
        make_ioi(tiny_gpt2, 2, part="test")
