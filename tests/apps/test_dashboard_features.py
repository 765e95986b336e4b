"""AppTest for the Features view: a tiny transcoder and its feature index render a feature page,
the agreement tab and the trace in feature space; switching a feature off shows a new prediction;
a bad folder is an st.error and the rest of the page still works."""

from __future__ import annotations

import pytest
import torch
from dashboard_helpers import errors, figures, open_app, shown

PROMPT = "In the beginning God created the heaven and the"


@pytest.fixture(scope="module")
def tiny_features(tiny_llama, tmp_path_factory):
    from interp.features import Dictionary, DictionaryConfig, save
    from interp.features.formats import model_fingerprint
    from interp.features.memories import build_feature_index
    from interp.memories import IndexSettings

    cfg = DictionaryConfig(site="mlp", layers=[0, 1], d_in=32, d_out=32, d_sae=40, k=4, model=model_fingerprint(tiny_llama))
    d = Dictionary(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in d.tensors().values():
            t.copy_(torch.randn(t.shape, generator=gen) * 0.3)
    root = tmp_path_factory.mktemp("features")
    save(d, root / "dict")
    settings = IndexSettings(corpus="kjv", n_tokens=512, seq_len=32, top_k=5, n_permutations=20)
    build_feature_index(tiny_llama, d, settings, root / "index")
    return root


def test_features_view_tiny(tiny_llama_dir, tiny_features):
    at = open_app(str(tiny_llama_dir), PROMPT, page="views/features.py", feat_index=str(tiny_features / "index"),
                  feat_dict=str(tiny_features / "dict"))
    assert not errors(at), errors(at)
    text = shown(at)
    assert "Feature 0:0" in text and "decoder cosine" in text and "features behind" in text
    names = [f["layout"]["title"]["text"] for f in figures(at)]
    assert any(n.startswith("layer 0 feature density") for n in names) and "features by layer" in names
    at.number_input(key="feat_feature").set_value(7).run()
    assert "Feature 0:7" in shown(at)
    first = at.multiselect(key="feat_off").options[0]
    at.multiselect(key="feat_off").select(first).run()
    assert not errors(at) and f"With {first} off" in shown(at)


def test_features_view_bad_folder_is_an_error(tiny_llama_dir, tiny_features, tmp_path):
    at = open_app(str(tiny_llama_dir), PROMPT, page="views/features.py", feat_index=str(tmp_path / "nothing"),
                  feat_dict=str(tiny_features / "dict"))
    assert any("no memory index" in e for e in errors(at))
    assert "features behind" in shown(at)  # the trace still works
