"""Our transcoders in circuit-tracer's per-layer format: names, orientation, config, and the round trip."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from interp.errors import WorkbenchError
from interp.features.dictionary import Dictionary, DictionaryConfig
from interp.graphs.tracer_format import (
    FEATURE_INPUT_HOOK,
    FEATURE_OUTPUT_HOOK,
    read_tracer_transcoders,
    write_tracer_transcoders,
)


def _random(activation="topk", skip=False, layers=(0, 1, 2), b_dec_in=False, seed=0) -> Dictionary:
    cfg = DictionaryConfig(site="mlp", layers=list(layers), d_in=6, d_out=6, d_sae=10,
                           k=3 if activation == "topk" else None, activation=activation, skip=skip,
                           apply_b_dec_to_input=b_dec_in)  # fmt: skip
    tc = Dictionary(cfg)
    gen = torch.Generator().manual_seed(seed)
    tensors = {n: torch.randn(t.shape, generator=gen) for n, t in tc.tensors().items()}
    if "threshold" in tensors:
        tensors["threshold"] = tensors["threshold"].abs()
    return tc.load_tensors(tensors)


@pytest.mark.parametrize("activation,skip", [("topk", False), ("relu", True), ("jumprelu", True)])
def test_round_trip_keeps_every_tensor_and_the_activation(tmp_path, activation, skip):
    tc = _random(activation, skip)
    write_tracer_transcoders(tc, tmp_path)
    back = read_tracer_transcoders(tmp_path)
    assert back.cfg.activation == activation and back.cfg.skip == skip and back.cfg.k == tc.cfg.k
    assert back.layers == [0, 1, 2]
    for name, t in tc.tensors().items():
        assert torch.equal(back.tensors()[name], t), name
    x = torch.randn(3, 5, 6)
    assert torch.allclose(back(x), tc(x))


def test_names_orientation_and_config_are_circuit_tracers(tmp_path):
    tc = _random("jumprelu", skip=True)
    config_path = write_tracer_transcoders(tc, tmp_path, scan="tiny")
    config = json.loads(config_path.read_text())
    assert config["model_kind"] == "transcoder_set" and config["scan"] == "tiny"
    assert (config["feature_input_hook"], config["feature_output_hook"]) == (FEATURE_INPUT_HOOK, FEATURE_OUTPUT_HOOK)
    assert [p.rsplit("/", 1)[-1] for p in config["transcoders"]] == [f"layer_{i}.safetensors" for i in range(3)]
    t = load_file(config["transcoders"][1])
    assert set(t) == {"W_enc", "W_dec", "b_enc", "b_dec", "W_skip", "activation_function.threshold"}
    assert t["W_enc"].shape == (10, 6) and torch.equal(t["W_enc"], tc.W_enc[1].T)  # [d_sae, d_model]
    assert torch.equal(t["W_dec"], tc.W_dec[1]) and torch.equal(t["W_skip"], tc.W_skip[1])
    # circuit-tracer's encode: F.linear(x, W_enc, b_enc), then pre * (pre > threshold)
    x = torch.randn(4, 6)
    pre = torch.nn.functional.linear(x, t["W_enc"], t["b_enc"])
    acts = pre * (pre > t["activation_function.threshold"])
    assert torch.allclose(acts, tc.encode(x, 1), atol=1e-6)


def test_b_dec_on_the_input_is_folded_into_b_enc(tmp_path):
    tc = _random("relu", b_dec_in=True)
    write_tracer_transcoders(tc, tmp_path)
    t = load_file(str(tmp_path / "layer_2.safetensors"))
    x = torch.randn(4, 6)
    pre = torch.nn.functional.linear(x, t["W_enc"], t["b_enc"])
    assert torch.allclose(pre.relu(), tc.encode(x, 2), atol=1e-5)


def test_layers_must_cover_zero_to_the_last(tmp_path):
    with pytest.raises(WorkbenchError, match="every layer"):
        write_tracer_transcoders(_random(layers=(0, 2)), tmp_path)
