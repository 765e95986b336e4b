"""Dictionaries on disk: ours and SAELens's round trips, sparsify's files as sparsify writes them,
and the one-line refusals of a dictionary made for another model or site."""

from __future__ import annotations

import json

import pytest
import torch
from feature_helpers import random_dictionary

from interp.errors import WorkbenchError
from interp.features import formats
from interp.features.formats import model_fingerprint


def _same(a, b):
    assert a.cfg.site == b.cfg.site and a.cfg.layers == b.cfg.layers and a.cfg.k == b.cfg.k
    for name, t in a.tensors().items():
        assert torch.equal(t, b.tensors()[name]), name


@pytest.mark.parametrize("site,skip", [("mlp", False), ("mlp", True), ("resid_post", False), ("mlp_out", False)])
def test_ours_and_saelens_round_trip(tmp_path, tiny_llama, site, skip):
    d = random_dictionary(site=site, skip=skip, model=model_fingerprint(tiny_llama))
    _same(d, formats.load(formats.save(d, tmp_path / "ours"), tiny_llama))
    back = formats.load(formats.save_saelens(d, tmp_path / "sl"), tiny_llama)
    _same(d, back)
    assert back.cfg.source == "saelens"
    x = torch.randn(5, 32)
    assert torch.allclose(back.reconstruct(x, 1), d.reconstruct(x, 1))


def test_saelens_files_are_saelens_shaped(tmp_path, tiny_llama):
    d = random_dictionary(site="resid_post", model=model_fingerprint(tiny_llama))
    formats.save_saelens(d, tmp_path / "sl")
    cfg = json.loads((tmp_path / "sl" / "blocks.1.hook_resid_post" / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 5 and cfg["d_sae"] == 48 and cfg["apply_b_dec_to_input"]
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "sl" / "blocks.1.hook_resid_post" / "sae_weights.safetensors"))
    assert w["W_enc"].shape == (32, 48) and w["W_dec"].shape == (48, 32)
    t = random_dictionary(site="mlp", skip=True, model=model_fingerprint(tiny_llama))
    formats.save_saelens(t, tmp_path / "tc")
    cfg = json.loads((tmp_path / "tc" / "blocks.0.mlp.hook_in" / "cfg.json").read_text())
    assert cfg["architecture"] == "topk_skip_transcoder" and cfg["metadata"]["hook_name_out"] == "blocks.0.hook_mlp_out"


@pytest.mark.parametrize("transcode,skip", [(True, False), (True, True), (False, False)])
def test_reads_sparsify_as_sparsify_writes_and_runs_it(tmp_path, transcode, skip):
    sparsify = pytest.importorskip("sparsify")
    torch.manual_seed(0)
    cfg = sparsify.SparseCoderConfig(num_latents=40, k=4, transcode=transcode, skip_connection=skip)
    coder = sparsify.SparseCoder(32, cfg)
    with torch.no_grad():
        for p in coder.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    coder.save_to_disk(tmp_path / "run" / "layers.1.mlp")
    d = formats.load(tmp_path / "run")
    assert d.cfg.site == ("mlp" if transcode else "mlp_out") and d.layers == [1] and d.cfg.source == "sparsify"
    x = torch.randn(6, 32)
    enc = coder.encode(x)
    theirs = coder.decode(enc.top_acts, enc.top_indices)
    if skip:
        theirs = theirs + x @ coder.W_skip.mT
    assert torch.allclose(d.reconstruct(x, 1), theirs, atol=1e-5)


def test_refuses_another_model(tmp_path, tiny_llama, tiny_gpt2):
    d = random_dictionary(model=model_fingerprint(tiny_llama))
    formats.save(d, tmp_path / "d")
    with pytest.raises(WorkbenchError, match="made for") as e:
        formats.load(tmp_path / "d", tiny_gpt2)
    assert "\n" not in str(e.value)
    wide = random_dictionary(d=16, model={})
    with pytest.raises(WorkbenchError, match="wide"):
        formats.check_for_model(wide, tiny_llama)
    deep = random_dictionary(layers=(0, 7), model={})
    with pytest.raises(WorkbenchError, match=r"layers \[7\]"):
        formats.check_for_model(deep, tiny_llama)
    with pytest.raises(WorkbenchError, match="made for site 'mlp'"):
        formats.check_for_model(d, tiny_llama, site="resid_post")


def test_refuses_another_site_from_saelens(tmp_path, tiny_llama):
    d = random_dictionary(site="mlp", model=model_fingerprint(tiny_llama))
    formats.save_saelens(d, tmp_path / "sl")
    path = tmp_path / "sl" / "blocks.0.mlp.hook_in" / "cfg.json"
    cfg = json.loads(path.read_text())
    cfg["metadata"]["hook_name"] = "blocks.0.ln2.hook_normalized"
    path.write_text(json.dumps(cfg))
    with pytest.raises(WorkbenchError, match="another site"):
        formats.load(tmp_path / "sl" / "blocks.0.mlp.hook_in")


def test_damaged_or_missing_files_are_one_line_errors(tmp_path):
    with pytest.raises(WorkbenchError, match="no dictionary"):
        formats.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkbenchError, match="holds no dictionary"):
        formats.load(tmp_path / "empty")
    d = random_dictionary()
    formats.save(d, tmp_path / "d")
    w = tmp_path / "d" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(WorkbenchError, match="corrupt or truncated"):
        formats.load(tmp_path / "d")
