"""readable_tokens: byte-level tokens shown by their bytes (<0xE2>) where they are no text on their
own, spaces and newlines made visible, special tokens by name -- never "\ufffd"."""

from __future__ import annotations

import pytest

from interp.train.tokens import readable_tokens, shown_text, token_bytes

TEXT = "a café costs 3 €\n\tnaïve 😀"


@pytest.fixture(scope="module")
def byte_bpe():
    """A byte-level BPE as interp.train.tokenizer trains one, on a few lines (vocab 300: most
    non-ASCII characters stay split into their bytes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the cat sat on the mat", "a café costs three euros", "the dog ate the cat"] * 20,
                            trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


@pytest.mark.parametrize(("data", "label"), [
    (b"cat", "cat"), (b" the", "␣the"), (b"a b", "a␣b"), (b"\n", "↵"), (b"\t", "⇥"), (b"\xe2\x82\xac", "€"),
    (b"\xe2", "<0xE2>"), (b"\x82\xac", "<0x82><0xAC>"), (b" \xc3", "␣<0xC3>"), (b"\x01", "<0x01>"), (b"", "∅"),
])
def test_shown_text_writes_bytes_that_are_no_text_as_hex(data, label):
    assert shown_text(data) == label


def test_byte_bpe_tokens_are_readable_and_keep_every_byte(byte_bpe):
    ids = byte_bpe.encode(TEXT, add_special_tokens=False)
    naive = [byte_bpe.decode([i]) for i in ids]
    assert "\ufffd" in naive  # what the view showed before: the euro sign's bytes decoded alone
    labels = readable_tokens(byte_bpe, ids)
    assert len(labels) == len(ids) and "\ufffd" not in "".join(labels)
    euro = byte_bpe.encode("€", add_special_tokens=False)
    assert readable_tokens(byte_bpe, euro) == ["<0xE2>", "<0x82>", "<0xAC>"]
    assert b"".join(token_bytes(byte_bpe, i) for i in ids) == TEXT.encode()  # nothing lost or invented
    assert readable_tokens(byte_bpe, byte_bpe.encode(" the\n", add_special_tokens=False)) == ["␣the", "↵"]


def test_special_tokens_show_by_name_and_tensors_are_read(byte_bpe):
    import torch

    ids = torch.tensor([byte_bpe.convert_tokens_to_ids("<|endoftext|>"), *byte_bpe.encode("cat", add_special_tokens=False)])
    assert readable_tokens(byte_bpe, ids)[0] == "<|endoftext|>"
    assert "".join(readable_tokens(byte_bpe, ids)[1:]) == "cat"


def test_gpt2_tokens_split_inside_a_character():
    from interp.models.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    ids = tok.encode(" café 😀")
    labels = readable_tokens(tok, ids)
    assert labels[0] == "␣café"
    assert "".join(labels[1:]) == "␣<0xF0><0x9F><0x98><0x80>"  # the emoji's four bytes, split over tokens
    assert "\ufffd" not in "".join(labels)


def test_without_a_tokenizer_the_ids_are_the_labels():
    assert readable_tokens(None, [3, 17]) == ["3", "17"]
