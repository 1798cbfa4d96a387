"""Captions, tokens and sub-sentence masks, as the official ReferDINO/GroundingDINO text path computes them.

The caption rule: lower-case, collapse whitespace, append "." when missing. Tokens are bert-base-uncased
WordPiece ids; the special ids [CLS]=101, [SEP]=102, "."=1012 and "?"=1029 split the caption into
sub-sentences that attend only within themselves and restart their position ids at 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.models.grounding_dino.modeling_grounding_dino import (
    generate_masks_with_special_tokens_and_transfer_map,
)

from ..errors import ExpressionError

SPECIAL_TOKEN_IDS = (101, 102, 1012, 1029)  # [CLS], [SEP], ".", "?" in bert-base-uncased
TOKENIZER_REPO = "bert-base-uncased"


def caption_for(expression: str) -> str:
    """The caption fed to the tokenizer: lower-case, single spaces, ending in "."."""
    if not isinstance(expression, str):
        raise ExpressionError(f"an expression must be a string, got {type(expression).__name__}")
    text = " ".join(expression.lower().split())
    if not any(ch.isalnum() for ch in text):
        raise ExpressionError(f"the expression {expression!r} is empty or has no letters or digits; describe the "
                              "object to segment, e.g. 'the man in a red shirt'")
    return text if text.endswith(".") else text + "."


@dataclass
class TextInputs:
    """Tokenized caption, batch of one.

    input_ids, token_type_ids, position_ids: (1, L) int64; attention_mask: (1, L) bool, True = real token;
    self_attention_mask: (1, L, L) bool, True = may attend (the sub-sentence block mask).
    `truncated` is True when the caption was longer than `max_text_len` tokens and was cut.
    """

    caption: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    position_ids: torch.Tensor
    self_attention_mask: torch.Tensor
    truncated: bool = False

    def to(self, device: torch.device | str) -> "TextInputs":
        tensors = {k: getattr(self, k).to(device) for k in
                   ("input_ids", "attention_mask", "token_type_ids", "position_ids", "self_attention_mask")}
        return TextInputs(caption=self.caption, truncated=self.truncated, **tensors)


def tokenize(caption: str, tokenizer, max_text_len: int = 256) -> TextInputs:
    """Tokenize one caption and build the sub-sentence masks, then truncate to `max_text_len` tokens.

    The masks are computed on the full sequence and truncated afterwards, as the official code does.
    """
    encoded = tokenizer([caption], padding="longest", return_tensors="pt")
    input_ids = encoded["input_ids"]
    special = torch.tensor(SPECIAL_TOKEN_IDS, dtype=torch.long)
    self_mask, position_ids = generate_masks_with_special_tokens_and_transfer_map(input_ids, special)
    attention_mask = encoded["attention_mask"].bool()
    token_type_ids = encoded.get("token_type_ids", torch.zeros_like(input_ids))
    length = input_ids.shape[1]
    truncated = length > max_text_len
    if truncated:
        cut = slice(0, max_text_len)
        input_ids, attention_mask, token_type_ids, position_ids = (
            t[:, cut] for t in (input_ids, attention_mask, token_type_ids, position_ids))
        self_mask = self_mask[:, cut, cut]
    return TextInputs(caption, input_ids, attention_mask, token_type_ids, position_ids, self_mask, truncated)


def load_tokenizer(vocab: str | Path | None = None):
    """A bert-base-uncased WordPiece tokenizer.

    `vocab` is a `vocab.txt` path (offline); without it the tokenizer comes from the Hugging Face Hub
    cache, downloading it on first use.
    """
    from transformers import BertTokenizer

    if vocab is not None:
        if not Path(vocab).is_file():
            raise FileNotFoundError(f"vocabulary file {vocab} does not exist")
        # transformers 5 ignores `vocab_file=`; `vocab=` is the argument that loads the file.
        return BertTokenizer(vocab=str(vocab), do_lower_case=True)
    from ..checkpoints.hub import load_hub_tokenizer

    return load_hub_tokenizer(TOKENIZER_REPO)


def synthetic_vocab() -> list[str]:
    """A WordPiece vocabulary for the untrained `tiny-random` model when no real one is at hand.

    It keeps the ids that matter to the model ([PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103,
    "."=1012, "?"=1029) and spells every other word letter by letter.
    """
    vocab = [f"[unused{i}]" for i in range(1030)]
    vocab[0], vocab[100], vocab[101], vocab[102], vocab[103] = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
    vocab[1012], vocab[1029] = ".", "?"
    pieces = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    pieces += list("!\"#$%&'()*+,-/:;<=>@[\\]^_`{|}~")
    vocab += pieces + ["##" + p for p in pieces if p.isalnum()]
    return vocab


def synthetic_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={token: i for i, token in enumerate(synthetic_vocab())}, do_lower_case=True)
