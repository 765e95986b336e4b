"""interp.models.load: parity with HF, the real SmolLM2, in-house round trips, bad input."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from interp import WorkbenchError, load
from interp.models.inhouse import NativeSpec, build_native, load_inhouse, save_inhouse
from interp.models.tokenizers import gpt2_tokenizer


@pytest.mark.parametrize("fixture", ["tiny_gpt2_dir", "tiny_llama_dir"])
def test_bridge_matches_hf_logits(fixture, request):
    folder = request.getfixturevalue(fixture)
    model = load(str(folder), device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    tokens = torch.randint(0, model.info.d_vocab, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (model(tokens) - hf(tokens).logits).abs().max().item()
    assert diff < 1e-4
    assert model.info.source == "local-hf"


def test_tiny_llama_metadata(tiny_llama):
    info = tiny_llama.info
    assert (info.n_layers, info.n_heads, info.n_kv_heads, info.d_mlp) == (2, 4, 2, 64)
    assert info.positional == "rotary" and info.normalization == "RMS" and info.gated_mlp


def test_tiny_gpt2_metadata_and_hooks(tiny_gpt2):
    info = tiny_gpt2.info
    assert (info.n_heads, info.n_kv_heads, info.positional, info.normalization) == (4, 4, "standard", "LN")
    _, cache = tiny_gpt2.run_with_cache(tiny_gpt2.to_tokens("hello there, world"))
    assert cache["blocks.1.attn.hook_pattern"].shape[1] == 4
    assert "blocks.0.mlp.hook_post" in cache and "blocks.0.hook_resid_pre" in cache


def test_gpt2_tokenizer_is_gpt2s_bpe():
    tok = gpt2_tokenizer()
    assert len(tok) == 50257
    assert tok.encode("Hello world") == [15496, 995]  # GPT-2's ids for these two tokens


@pytest.mark.slow
def test_smollm2_answers_paris_and_mary(smollm2):
    assert smollm2.top_predictions("The Eiffel Tower is located in the city of", 1)[0][0] == " Paris"
    ioi = "When Mary and John went to the store, John gave a drink to"
    assert smollm2.top_predictions(ioi, 1)[0][0] == " Mary"
    assert smollm2.info.gated_mlp and smollm2.info.normalization == "RMS" and smollm2.info.positional == "rotary"


@pytest.mark.parametrize("positional", ["standard", "rotary", "alibi"])
def test_inhouse_round_trip(tmp_path, positional):
    tok = gpt2_tokenizer()
    spec = NativeSpec(n_layers=2, d_model=32, n_heads=4, d_head=8, n_kv_heads=2, n_ctx=32,
                      d_vocab=len(tok), attn_only=True, normalization="RMS", positional=positional, seed=3)
    built = build_native(spec, tok)
    save_inhouse(built, spec, tmp_path / "ckpt")
    bridge = built.bridge
    model = load(str(tmp_path / "ckpt"), device="cpu")
    tokens = torch.randint(0, len(tok), (2, 12))
    with torch.no_grad():
        assert torch.allclose(model(tokens), bridge(tokens), atol=1e-6)
    assert model.info.source == "inhouse" and model.info.positional == positional
    assert model.info.n_kv_heads == 2 and model.info.attn_only


def test_alibi_matches_plain_attention():
    """The ALiBi bridge's layer-0 pattern equals a plainly written ALiBi softmax."""
    from interp.models.inhouse import alibi_slopes

    tok = gpt2_tokenizer()
    spec = NativeSpec(n_layers=1, d_model=32, n_heads=4, d_head=8, n_ctx=32, d_vocab=len(tok),
                      attn_only=True, normalization=None, positional="alibi", seed=0)
    bridge = build_native(spec, tok).bridge
    tokens = torch.randint(0, len(tok), (2, 10))
    _, cache = bridge.run_with_cache(tokens)
    q, k = cache["blocks.0.attn.hook_q"], cache["blocks.0.attn.hook_k"]  # [batch pos head d_head]
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / 8 ** 0.5
    slopes = alibi_slopes(4)
    for i in range(10):
        for j in range(10):
            scores[:, :, i, j] += -slopes * (i - j) if j <= i else float("-inf")
    expected = scores.softmax(-1)
    assert torch.allclose(cache["blocks.0.attn.hook_pattern"], expected, atol=1e-5)
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))


# -- bad input: one clear line, no traceback --------------------------------------------------


def _one_line(err: WorkbenchError) -> str:
    msg = str(err)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_unknown_spec_lists_valid_specs():
    with pytest.raises(WorkbenchError) as e:
        load("gpt3-ultra")
    msg = _one_line(e.value)
    assert "smollm2-135m" in msg and "gpt2" in msg


def test_missing_path():
    with pytest.raises(WorkbenchError, match="does not exist"):
        load("./no/such/model")
    with pytest.raises(WorkbenchError, match="does not exist"):
        load("/tmp/nowhere/model.gguf")


def test_truncated_safetensors(tiny_gpt2_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_gpt2_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(WorkbenchError, match="corrupt or truncated") as e:
        load(str(broken))
    _one_line(e.value)


def test_garbage_safetensors(tiny_gpt2_dir, tmp_path):
    broken = tmp_path / "garbage"
    shutil.copytree(tiny_gpt2_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(WorkbenchError, match="corrupt or truncated"):
        load(str(broken))


def test_pickle_weights_are_refused(tiny_gpt2_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_gpt2_dir, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(WorkbenchError, match="pickle"):
        load(str(folder))


def test_corrupt_and_truncated_gguf(tmp_path):
    from interp.models.sources import bundled_gguf_path

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(WorkbenchError, match="GGUF") as e:
        load(str(bad))
    _one_line(e.value)
    real = bundled_gguf_path()
    truncated = tmp_path / "trunc.gguf"
    with open(real, "rb") as fh:
        truncated.write_bytes(fh.read(5_000_000))
    with pytest.raises(WorkbenchError, match="GGUF"):
        load(str(truncated))


def test_hub_name_offline_says_how_to_pass_a_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(WorkbenchError) as e:
        load("gpt2")
    msg = _one_line(e.value)
    assert "local folder" in msg and "gpt2" in msg


def test_corrupt_inhouse_checkpoint(tmp_path):
    tok = gpt2_tokenizer()
    spec = NativeSpec(n_layers=1, d_model=16, n_heads=2, d_head=8, n_ctx=16, d_vocab=len(tok), attn_only=True)
    save_inhouse(build_native(spec, tok), spec, tmp_path / "ck")
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(WorkbenchError, match="corrupt"):
        load_inhouse(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text("{not json")
    with pytest.raises(WorkbenchError, match="corrupt"):
        load(str(tmp_path / "ck"))


def test_no_pickle_loading_in_the_codebase():
    """Security: model files are read with safetensors; torch.load only with weights_only=True."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    offenders = []
    for path in list((root / "interp").rglob("*.py")) + list((root / "apps").rglob("*.py")):
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                offenders.append(f"{path}: {m.group(0)}")
        if re.search(r"\bpickle\.loads?\(", text):
            offenders.append(f"{path}: pickle.load")
    assert not offenders, offenders


def test_cli_models_lists_specs(capsys):
    from interp.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "gpt2-xl" in out and "yes" in out


def test_cli_bad_input_exit_code(capsys):
    from interp.cli import main

    assert main(["no-such-command"]) == 2
    assert main(["models", "--format", "yaml"]) == 2


@pytest.mark.network
def test_gpt2_from_the_hub_predicts_paris_like_gpt2():
    model = load("gpt2", device="cpu")
    assert (model.info.n_layers, model.info.n_heads, model.info.d_vocab) == (12, 12, 50257)
    top = [t for t, _ in model.top_predictions("The Eiffel Tower is located in the city of", 5)]
    assert " Paris" in top


@pytest.mark.parametrize(("device", "message"), [("mps", "MPS is not available"), ("tpu", "unknown device"),
                                                 ("cuda:7", "CUDA is not available|does not exist")])
def test_devices_this_machine_lacks_are_refused(device, message):
    from interp.models.device import pick_device

    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(WorkbenchError, match=message):
        pick_device(device)


def test_whitespace_only_prompt_is_refused(tiny_gpt2):
    with pytest.raises(WorkbenchError, match="empty prompt"):
        tiny_gpt2.to_tokens("   \n\t ")


def test_device_map_placement_and_its_bad_inputs(tiny_llama_dir, tiny_llama, monkeypatch):
    """load(device_map=..., max_memory=...) hands both to transformers (accelerate places the
    layers; on this CPU-only machine every entry can only say "cpu") and gives the same logits as
    a plain load. A device together with a map and max_memory without one are refused in one line."""
    seen = {}
    original = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.update(kwargs)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers": "cpu",
                  "model.norm": "cpu", "lm_head": "cpu"}  # fmt: skip
    placed = load(str(tiny_llama_dir), dtype="float32", device_map=device_map, max_memory={"cpu": "4GiB"})
    assert seen["device_map"] == device_map and seen["max_memory"] == {"cpu": "4GiB"}
    tokens = tiny_llama.to_tokens("a placed model")
    torch.testing.assert_close(placed(tokens), tiny_llama(tokens), atol=1e-5, rtol=1e-5)
    with pytest.raises(WorkbenchError, match="not both"):
        load(str(tiny_llama_dir), device="cpu", device_map="auto")
    with pytest.raises(WorkbenchError, match="only applies with a device_map"):
        load(str(tiny_llama_dir), max_memory={"cpu": "1GiB"})
