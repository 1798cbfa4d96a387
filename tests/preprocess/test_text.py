import pytest
import torch

from referdino_demo.errors import ExpressionError
from referdino_demo.preprocess.text import (MAX_EXPRESSION_CHARS, caption_for, load_tokenizer, sub_sentence_masks,
                                           synthetic_tokenizer, tokenize, validate_expressions)


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


def test_cut_first_sub_sentence_masks_equal_the_official_build_then_cut():
    """Generated id sequences (special tokens at every density, cuts before, at and after the end): the masks of the
    kept tokens are those transformers' official-equivalent function builds on the whole sequence and then cuts."""
    import random

    from transformers.models.grounding_dino.modeling_grounding_dino import (
        generate_masks_with_special_tokens_and_transfer_map as build_whole)

    from referdino_demo.preprocess.text import SPECIAL_TOKEN_IDS

    rng = random.Random(0)
    for _ in range(400):
        length, keep = rng.randint(1, 300), rng.randint(1, 320)
        density = rng.random()
        ids = torch.tensor([[rng.choice(SPECIAL_TOKEN_IDS) if rng.random() < density else rng.randint(1000, 3000)
                             for _ in range(length)] for _ in range(rng.randint(1, 3))])
        whole_mask, whole_positions = build_whole(ids, torch.tensor(SPECIAL_TOKEN_IDS))
        mask, positions = sub_sentence_masks(ids, keep)
        assert torch.equal(mask, whole_mask[:, :keep, :keep])
        assert torch.equal(positions, whole_positions[:, :keep])


def test_a_long_token_sequence_costs_linear_memory():
    # built whole, 300,000 tokens would need a 90 GB (L, L) mask; cut first it is (256, 256)
    ids = torch.randint(1000, 3000, (1, 300_000))
    ids[0, ::7] = 1012
    mask, positions = sub_sentence_masks(ids, 256)
    assert mask.shape == (1, 256, 256) and positions.shape == (1, 256)


def test_long_expressions_are_cut_to_characters_then_tokens(vocab):
    tokenizer = load_tokenizer(vocab)
    for text in ["word " * 30_000, "x" * 100_000, ("supercalifragilistic " * 5_000)]:
        [kept] = validate_expressions(text)
        assert len(kept) <= MAX_EXPRESSION_CHARS
        tokens = tokenize(caption_for(kept), tokenizer)
        assert tokens.input_ids.shape[1] <= 256 and tokens.self_attention_mask.shape[1] <= 256


def test_expressions_are_counted_while_read():
    consumed = []

    def lines():
        for i in range(1_000_000):
            consumed.append(i)
            yield f"object number {i}"

    with pytest.raises(ExpressionError, match="more than 16 expressions"):
        validate_expressions(lines())
    assert len(consumed) == 17  # refused at the 17th distinct line, the rest never read
    # duplicates and blank lines do not count; the order of first appearance is kept
    assert validate_expressions("b dog\n\n a  dog\nb dog\n" * 5000) == ["b dog", "a dog"]


def test_every_character_gives_a_result_or_an_expression_error(vocab):
    """Generated code points from all of Unicode (surrogates included, as a JSON client or a non-UTF-8 command line
    produces them): the text is refused with ExpressionError or tokenized, never another exception."""
    import random
    import unicodedata

    tokenizers = [load_tokenizer(vocab), synthetic_tokenizer()]
    rng = random.Random(0)
    for _ in range(1500):
        ch = chr(rng.choice([rng.randint(0, 0x10FFFF), rng.randint(0xD800, 0xDFFF), rng.randint(0, 0x2FFF)]))
        text = f"the dog {ch} on the left"
        if unicodedata.category(ch) in ("Cc", "Cs") and not ch.isspace():
            with pytest.raises(ExpressionError, match=f"U\\+{ord(ch):04X}"):
                validate_expressions(text)
            continue
        for tokenizer in tokenizers:
            tokenize(caption_for(validate_expressions(text)[0]), tokenizer)
