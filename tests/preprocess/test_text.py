import pytest
import torch

from referdino_demo.errors import ExpressionError
from referdino_demo.preprocess.text import caption_for, load_tokenizer, synthetic_tokenizer, tokenize


@pytest.mark.parametrize("expression, caption", [
    ("the red ball moving to the left", "the red ball moving to the left."),
    ("  The  Man\tin red.  ", "the man in red."),
    ("is it a dog?", "is it a dog?."),
])
def test_caption_rule(expression, caption):
    assert caption_for(expression) == caption


@pytest.mark.parametrize("expression", ["", "   ", "\n\t", ".", "...?!", "🐶", None])
def test_empty_expression_is_refused(expression):
    with pytest.raises(ExpressionError):
        caption_for(expression)


def test_tokenization_matches_the_official_fixture(vocab, parity_dir):
    from safetensors.torch import load_file

    expected = load_file(str(parity_dir / "inputs.safetensors"))
    text = tokenize(caption_for("the red ball moving to the left"), load_tokenizer(vocab))
    assert torch.equal(text.input_ids, expected["input_ids"])
    assert torch.equal(text.position_ids, expected["position_ids"])
    assert torch.equal(text.self_attention_mask, expected["text_self_attention_masks"])


def test_sub_sentences_attend_within_themselves(vocab):
    # [CLS] a cat . a dog ? . [SEP]: blocks {a cat .} and {a dog ?}; "." after "?" closes a block of itself.
    text = tokenize("a cat. a dog?.", load_tokenizer(vocab))
    assert text.input_ids[0].tolist() == [101, 1037, 4937, 1012, 1037, 3899, 1029, 1012, 102]
    assert text.position_ids[0].tolist() == [0, 0, 1, 2, 0, 1, 2, 0, 0]
    mask = text.self_attention_mask[0].int()
    blocks = [[0], [1, 2, 3], [4, 5, 6], [7], [8]]
    expected = torch.zeros(9, 9, dtype=torch.int)
    for block in blocks:
        for i in block:
            for j in block:
                expected[i, j] = 1
    assert torch.equal(mask, expected)


def test_long_captions_are_truncated_and_flagged(vocab):
    text = tokenize(caption_for("word " * 400), load_tokenizer(vocab), max_text_len=256)
    assert text.truncated and text.input_ids.shape == (1, 256) and text.self_attention_mask.shape == (1, 256, 256)
    assert not tokenize(caption_for("a dog"), load_tokenizer(vocab)).truncated


def test_synthetic_tokenizer_keeps_the_special_ids():
    ids = tokenize(caption_for("A cat? Yes"), synthetic_tokenizer()).input_ids[0].tolist()
    assert ids[0] == 101 and ids[-1] == 102 and ids[-2] == 1012 and 1029 in ids
    assert all(i != 100 for i in ids)  # every character is in the vocabulary: no [UNK]
