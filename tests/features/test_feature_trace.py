"""The trace in feature space adds up to the MLP's direct effect, and switching features off
removes exactly their writes."""

from __future__ import annotations

import pytest

from interp.errors import WorkbenchError
from interp.features.trace import feature_trace, parse_feature, switch_off
from interp.memories.trace import contributions

PROMPT = "In the beginning God created the heaven and the"


def test_contributions_bias_and_error_add_up_to_the_mlp_effect(tiny_llama, tiny_transcoder):
    tr = feature_trace(tiny_llama, tiny_transcoder, PROMPT, top=5, per_layer=200)
    mlp = contributions(tiny_llama, tiny_llama.to_tokens(PROMPT)).mlp_effect
    for row in tr.layers:
        assert row.feature_effect == pytest.approx(sum(f.contribution for f in row.features), abs=1e-5)  # all listed
        assert row.feature_effect + row.bias_effect + row.error_effect == pytest.approx(row.mlp_effect, abs=1e-4)
        assert row.mlp_effect == pytest.approx(float(mlp[row.layer]), abs=1e-4)
        assert len(row.features) <= tiny_transcoder.cfg.k
    assert tr.top[0].contribution >= tr.top[-1].contribution


def test_switch_off_removes_exactly_the_features_write(tiny_llama, tiny_transcoder):
    tr = feature_trace(tiny_llama, tiny_transcoder, PROMPT, per_layer=200)
    f = tr.layers[1].features[0]
    got = switch_off(tiny_llama, tiny_transcoder, PROMPT, [(1, f.feature)], top=3)
    tokens = tiny_llama.to_tokens(PROMPT)
    x = {}

    def grab(act, hook=None):
        x["in"] = act[0, -1]

    def put(act, hook=None):
        a = tiny_transcoder.encode(x["in"], 1)[f.feature]
        act = act.clone()
        act[0, -1] -= a * tiny_transcoder.W_dec[1, f.feature]
        return act

    ref = tiny_llama.run_with_hooks(tokens, fwd_hooks=[("blocks.1.mlp.hook_in", grab), ("blocks.1.hook_mlp_out", put)])
    p = ref[0, -1].softmax(-1)
    assert got["after"][0][1] == pytest.approx(float(p.max().detach()), rel=1e-5)
    assert got["before"] != got["after"]


def test_bad_feature_names_and_sites(tiny_llama, tiny_transcoder):
    with pytest.raises(WorkbenchError, match="LAYER:FEATURE"):
        parse_feature("12-3")
    with pytest.raises(WorkbenchError, match="out of range"):
        switch_off(tiny_llama, tiny_transcoder, PROMPT, [(1, 10_000)])
    from feature_helpers import random_dictionary

    from interp.features.formats import model_fingerprint

    sae = random_dictionary(site="resid_post", model=model_fingerprint(tiny_llama))
    with pytest.raises(WorkbenchError, match="transcoder"):
        feature_trace(tiny_llama, sae, PROMPT)
