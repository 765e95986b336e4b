"""Greater-than over the whole year on a digit tokenizer (metric prob-diff-year: the tens digit read at
TENS, the units digit at END after the fed tens digit): the metric against a slow reference from two
separate forward passes, its gradient, every engine against its plain-forward reference (for the year
and for the tens digit alone, which reads TENS, not END), and `interp circuit --task greater-than`."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch
from circuit_helpers import assert_eap_is_a_finite_difference

from interp.circuits.ablate import Ablator, ablated_reference
from interp.circuits.edges import edge_effects, edge_effects_reference
from interp.circuits.methods import score_edges
from interp.circuits.path import Receivers, path_patch
from interp.circuits.path_reference import path_patch_reference
from interp.circuits.types import Graph
from interp.data.tasks import end_logits, load_task, metric_fn
from interp.errors import WorkbenchError

SHAPE = {"n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "d_model": 32, "d_mlp": 64, "n_ctx": 64}
UNEMBED_SCALE = 30.0


def _digit_tokenizer(folder):
    """A word-level tokenizer over greater-than's words with every digit a token of its own (as SmolLM2
    splits numbers): 58 tokens, so a random model's next token is not spread over tens of thousands."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from interp.data.tasks import NOUNS

    words = ["<bos>", "<unk>"] + [str(d) for d in range(10)] + sorted({"The", "lasted", "from", "the", "year", "to", *NOUNS})
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    backend.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<bos>", unk_token="<unk>")
    tok.save_pretrained(folder)
    return tok


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    """A random 2-layer Llama (GQA, rotary, SwiGLU) reading the digit tokenizer, saved as a local HF
    folder; its queries and its unembedding scaled up, so that attention and the next token move
    visibly with the prompt (a fresh model's are nearly uniform)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny_digits")
    tok = _digit_tokenizer(folder)
    torch.manual_seed(1)
    cfg = LlamaConfig(num_hidden_layers=SHAPE["n_layers"], num_attention_heads=SHAPE["n_heads"],
                      num_key_value_heads=SHAPE["n_kv_heads"], hidden_size=SHAPE["d_model"],
                      intermediate_size=SHAPE["d_mlp"], vocab_size=len(tok), max_position_embeddings=SHAPE["n_ctx"],
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(16.0)
        model.lm_head.weight.mul_(UNEMBED_SCALE)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def digits(digits_dir):
    from interp import load

    return load(str(digits_dir), device="cpu")


def _years(prompt: str) -> tuple[int, int]:
    """(T, U): the start year's tens and units digits, read back from the prompt's text."""
    yy = int(re.search(r"from the year \d\d(\d\d) to", prompt).group(1))
    return divmod(yy, 10)


def _last_probs(model, text: str) -> torch.Tensor:
    """The next-token distribution after `text` (its own forward)."""
    with torch.no_grad():
        return model(model.to_tokens(text))[0, -1].float().softmax(-1)


def _reference(model, task, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(whole year, tens digit) per prompt the slow way: P(t) from a forward of the prompt without its fed
    tens digit, P(u | T) from a forward of the whole prompt; the sums written out digit by digit."""
    cand = task.candidates.tolist()
    year, tens = [], []
    for text, clean in zip(prompts, task.prompts):
        T, U = _years(clean)
        assert text.endswith(str(T))
        p_t, p_u = _last_probs(model, text[:-1]), _last_probs(model, text)
        above = sum(p_t[cand[t]] for t in range(T + 1, 10)) + p_t[cand[T]] * sum(p_u[cand[u]] for u in range(U + 1, 10))
        at_or_below = sum(p_t[cand[t]] for t in range(T)) + p_t[cand[T]] * sum(p_u[cand[u]] for u in range(U + 1))
        year.append(above - at_or_below)
        tens.append(sum(p_t[cand[t]] for t in range(T + 1, 10)) - sum(p_t[cand[t]] for t in range(T)))
    return torch.stack(year), torch.stack(tens)


def _check_against_reference(model, split, atol: float) -> None:
    units = 0.0  # how far the whole year and the tens digit alone part, at most
    for t in (split.score, split.heldout):
        assert t.metric == "prob-diff-year" and set(t.positions) == {"YY", "TENS", "END"}
        assert torch.equal(t.positions["TENS"], t.end - 1) and t.reads.tolist() == torch.stack([t.end - 1, t.end], -1).tolist()
        with torch.no_grad():
            clean, corr = model(t.clean), model(t.corrupted)
        ref_clean, ref_tens = _reference(model, t, t.prompts)
        ref_corr, _ = _reference(model, t, t.corrupted_prompts)
        got = metric_fn(t)
        assert torch.allclose(got(end_logits(clean, t.reads)), ref_clean, atol=atol)
        assert torch.allclose(got(end_logits(corr, t.reads)), ref_corr, atol=atol)
        tens = t.with_metric("prob-diff-tens")  # the tens digit alone, read at TENS
        assert torch.allclose(metric_fn(tens)(end_logits(clean, tens.reads)), ref_tens, atol=atol)
        units = max(units, float((ref_clean - ref_tens).abs().max()))
    assert units > 100 * atol  # the units digit counts


def test_year_metric_equals_two_forward_reference(digits):
    split = load_task("greater-than", digits, 6, 4, seed=0)
    t = split.score
    tok = digits.tokenizer
    for i in range(len(t)):
        T, U = _years(t.prompts[i])
        e = int(t.end[i])
        assert t.prompts[i].endswith(str(T)) and t.corrupted_prompts[i].endswith(str(T))  # the tens digit fed, both sides
        assert tok.decode([int(t.clean[i, e])]) == str(T) == tok.decode([int(t.corrupted[i, e])])
        assert t.next_sides[i].tolist() == [1 if u > U else -1 for u in range(10)]
        assert t.sides[i].tolist() == [1 if d > T else (-1 if d < T else 0) for d in range(10)]
    _check_against_reference(digits, split, atol=1e-6)
    with pytest.raises(WorkbenchError, match="use metric 'prob-diff-year'.*'prob-diff-tens'"):
        t.with_metric("prob-diff")
    with pytest.raises(WorkbenchError, match="reads a year written as two digit tokens"):
        load_task("induction", digits, 2, 2, metric="prob-diff-year")


def test_two_digit_tokens_keep_one_position(tiny_gpt2):
    """GPT-2 writes YY as one token: greater-than's prob-diff at END is already the whole year."""
    t = load_task("greater-than", tiny_gpt2, 4, 2).score
    assert t.metric == "prob-diff" and t.next_sides is None and torch.equal(t.reads, t.end)
    with pytest.raises(WorkbenchError, match="reads a year written as two digit tokens"):
        t.with_metric("prob-diff-year")


@pytest.mark.slow
def test_year_metric_on_smollm2_equals_two_forward_reference(smollm2):
    _check_against_reference(smollm2, load_task("greater-than", smollm2, 4, 3, seed=2), atol=1e-5)


def test_gradient_reaches_both_positions(digits):
    t = load_task("greater-than", digits, 3, 2).score
    logits = digits(t.clean).detach().requires_grad_(True)
    metric_fn(t)(end_logits(logits, t.reads)).sum().backward()
    g = logits.grad.abs().sum(-1)  # [batch pos]
    rows = torch.arange(len(t))
    assert (g[rows, t.end] > 0).all() and (g[rows, t.end - 1] > 0).all()
    assert float(g.sum()) == pytest.approx(float((g[rows, t.end] + g[rows, t.end - 1]).sum()))  # nowhere else


def _task(model, metric: str, n: int = 3, seed: int = 0):
    """Greater-than prompts with the metric; the corrupted prompts scrambled (random tokens) before the
    century's last digit, so a tiny random model's effects stand well above float noise."""
    t = load_task("greater-than", model, n, 2, seed=seed, metric=metric).score
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(2, model.info.d_vocab, t.clean.shape, generator=g).to(t.clean.device)
    keep = torch.arange(t.clean.shape[1])[None, :] >= (t.end - 1)[:, None]
    keep[:, 0] = True  # BOS
    return replace(t, corrupted=torch.where(keep.to(t.clean.device), t.clean, noise))


METRICS = ["prob-diff-year", "prob-diff-tens"]


@pytest.mark.parametrize("metric", METRICS)
def test_exact_edge_patching_equals_reference(digits, metric):
    task = _task(digits, metric)
    ref = edge_effects_reference(digits, task)
    fast = edge_effects(digits, task, chunk_tokens=64)
    assert float(ref.abs().max()) > 1e-3 and float((fast.scores - ref).abs().max()) < 1e-5 * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("ablation", ["counterfactual", "mean"])
def test_ablation_engine_equals_reference(digits, metric, ablation):
    held, mean_over = _task(digits, metric, seed=2), _task(digits, metric, 4, seed=9)
    ab = Ablator(digits, held, ablation, mean_over)
    g = Graph.of(digits)
    gen = torch.Generator().manual_seed(0)
    keeps = [torch.rand(g.n_edges, generator=gen) < f for f in (0.0, 0.05, 0.3, 0.7, 0.97)]
    stacked, one_by_one = ab.run_many(keeps, stacked=True), ab.run_many(keeps, stacked=False)
    for keep, fast, single in zip(keeps, stacked, one_by_one):
        plain = ablated_reference(digits, held, keep, ablation, mean_over)
        assert torch.allclose(fast, plain, atol=2e-6) and torch.allclose(single, plain, atol=2e-6), (fast, plain)
    assert float((stacked[1] - ab.m_full).abs().max()) > 1e-3  # the ablation does something
    assert ab.check()


@pytest.mark.parametrize("metric", METRICS)
def test_path_patching_equals_reference(digits, metric):
    task = _task(digits, metric)
    for receivers in (None, Receivers([(1, 0), (1, 3)], "qkv", "YY")):
        fast, ref = path_patch(digits, task, receivers=receivers), path_patch_reference(digits, task, receivers=receivers)
        assert torch.allclose(fast.clean, ref.clean, atol=1e-6)
        effect = float((ref.patched - ref.clean).abs().max())
        assert effect > 1e-4 and float((fast.patched - ref.patched).abs().max()) <= 1e-3 * effect + 1e-7
    with pytest.raises(WorkbenchError, match="reads position TENS, before the receivers' position END"):
        path_patch(digits, task, receivers=Receivers([(1, 0)], "q", "END"))


def test_eap_is_the_derivative_of_exact_patching(digits):
    """EAP's gradient flows through both reads: it equals central differences of the exact engine
    (held to its reference above) on the strongest edge into each kind of input."""
    task = _task(digits, "prob-diff-year", 4)
    eap = score_edges(digits, task, "eap")
    g = eap.graph
    kinds = [g.readers[int(r)].kind for r in g.dst]
    strongest = [max((i for i, k in enumerate(kinds) if k == kind), key=lambda i: abs(float(eap.scores[i])))
                 for kind in sorted(set(kinds))]  # fmt: skip
    assert_eap_is_a_finite_difference(digits, task, eap, strongest)
    assert float(eap.scores.abs().max()) > 1e-3
    ig = score_edges(digits, task, "eap-ig", steps=2)
    assert float(ig.scores.abs().max()) > 1e-3 and ig.metric == "prob-diff-year"


@pytest.mark.parametrize("metric", METRICS)
def test_learned_masks_gated_forward_is_the_ablation_engine(digits, metric):
    """Edge Pruning's gated forward reads where the metric reads: on binary gates it gives Ablator.run's
    metric (itself held to the reference above); its gate gradients at z = 1 are EAP's scores."""
    from interp.circuits.masks import EdgeForward

    task = _task(digits, metric, 4, seed=1)
    g = Graph.of(digits)
    fw = EdgeForward(digits, task, g)
    gen = torch.Generator().manual_seed(0)
    for p in (0.0, 0.1, 0.5, 0.9, 1.0):
        keep = torch.rand(g.n_edges, generator=gen) < p
        with torch.no_grad():
            got = fw.ab.metric(fw.outputs(keep.float())[None])[0]
        assert torch.allclose(got, fw.ab.run(keep), atol=1e-5), p
    z = torch.ones(g.n_edges, requires_grad=True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(fw.ab.metric(fw.outputs(z)[None])[0].mean(), z)
    eap = score_edges(digits, task, "eap").scores
    assert float(eap.abs().max()) > 1e-3 and torch.allclose(grad, eap, atol=1e-5, rtol=1e-3)


def test_circuit_cli_scores_the_whole_year(digits_dir, tmp_path, capsys):
    from interp.cli import main

    def run(out, *flags):
        assert main(["circuit", "--model", str(digits_dir), "--task", "greater-than", "--steps", "2", "--n-prompts", "4",
                     "--n-heldout", "3", "--exact-top", "3", "--device", "cpu", "--out", str(out), *flags]) == 0  # fmt: skip
        return json.loads((out / "edges.json").read_text())

    j = run(tmp_path / "year")
    printed = capsys.readouterr().out
    assert j["task"] == "greater-than" and j["metric"] == "prob-diff-year"
    assert j["curve"][-1]["faithfulness"] == pytest.approx(1.0, abs=1e-6) and len(j["exact_check"]) == 3
    assert "at 5% of edges" in printed
    assert run(tmp_path / "tens", "--metric", "prob-diff-tens")["metric"] == "prob-diff-tens"
