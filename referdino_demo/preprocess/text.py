"""Captions, tokens and sub-sentence masks, as the official ReferDINO/GroundingDINO text path computes them.

The caption rule: lower-case, collapse whitespace, append "." when missing. Tokens are bert-base-uncased
WordPiece ids; the special ids [CLS]=101, [SEP]=102, "."=1012 and "?"=1029 split the caption into
sub-sentences that attend only within themselves and restart their position ids at 0.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from ..errors import ConfigError, ExpressionError

SPECIAL_TOKENS = ("[CLS]", "[SEP]", ".", "?")
SPECIAL_TOKEN_IDS = (101, 102, 1012, 1029)  # their ids in bert-base-uncased
_MAX_VOCAB_BYTES = 16 << 20  # bert-base-uncased's is 226 KB
TOKENIZER_REPO = "bert-base-uncased"
MAX_EXPRESSIONS = 16
# Characters kept of one expression: 256 tokens of ordinary words take about 1,300, so the token cut binds first;
# only runs of very long words (one token each) are cut here.
MAX_EXPRESSION_CHARS = 2048


def caption_for(expression: str) -> str:
    """The caption fed to the tokenizer: lower-case, single spaces, ending in "."."""
    if not isinstance(expression, str):
        raise ExpressionError(f"an expression must be a string, got {type(expression).__name__}")
    text = " ".join(expression.lower().split())
    if not any(ch.isalnum() for ch in text):
        raise ExpressionError(f"the expression {quoted(expression)} is empty or has no letters or digits; describe "
                              "the object to segment, e.g. 'the man in a red shirt'")
    return text if text.endswith(".") else text + "."


def validate_expressions(expressions: str | Iterable[str], limit: int = MAX_EXPRESSIONS,
                         max_chars: int = MAX_EXPRESSION_CHARS) -> list[str]:
    """One expression or several (a list, or lines of one text: the UI convention) -> cleaned, unique, non-empty,
    each cut to `max_chars` characters.

    Linear in the input: lines are counted while they are read, so a request with thousands of lines is refused
    at line `limit + 1`, before anything else is done with them.
    """
    if isinstance(expressions, str):
        expressions = expressions.splitlines()
    elif not isinstance(expressions, Iterable):
        raise ExpressionError(f"expressions must be a string or a list of strings, got {type(expressions).__name__}")
    cleaned: dict[str, None] = {}  # insertion-ordered set
    for expression in expressions:
        if not isinstance(expression, str):
            raise ExpressionError(f"expressions must be strings, got {type(expression).__name__}")
        text = clean_expression(expression, max_chars)
        if not text or text in cleaned:
            continue
        if len(cleaned) == limit:
            raise ExpressionError(f"more than {limit} expressions given; at most {limit} per video. Split them over "
                                  "several runs")
        _refuse_unprintable(text)
        caption_for(text)  # raises on expressions with nothing but punctuation
        cleaned[text] = None
    if not cleaned:
        raise ExpressionError("no expression given: type what to segment, e.g. 'the dog jumping over the fence'")
    return list(cleaned)


def clean_expression(text: str, max_chars: int = MAX_EXPRESSION_CHARS) -> str:
    """Runs of whitespace as one space, no space at the ends, cut to `max_chars`: how an expression is named."""
    return " ".join(text.split())[:max_chars]


def _refuse_unprintable(text: str) -> None:
    """Control characters (NUL, ESC, DEL, ...; whitespace ones are collapsed before) are invisible in every UI and
    usually come from pasted terminal output; lone surrogates come from broken JSON escapes or undecodable bytes in
    a command line, and no tokenizer takes them. Refuse both by name rather than segment a different text."""
    found = sorted({ch for ch in text if unicodedata.category(ch) in ("Cc", "Cs")})
    if found:
        kinds = " and ".join(sorted({"control" if unicodedata.category(ch) == "Cc" else "invalid" for ch in found}))
        names = ", ".join(f"U+{ord(ch):04X}" for ch in found[:5])
        raise ExpressionError(f"the expression {quoted(text)} contains {kinds} characters ({names}); remove them "
                              "and type the expression as plain text (UTF-8)")


def quoted(text: str, limit: int = 60) -> str:
    """`text` quoted for a message: cut after `limit` characters, unprintable characters escaped by repr."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


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
    """Tokenize one caption, cut it to `max_text_len` tokens and build the sub-sentence masks of the kept tokens.

    The official code builds the (L, L) masks on the whole sequence and cuts them afterwards; `sub_sentence_masks`
    gives the same kept block while holding only (max_text_len, max_text_len), so a long text costs linear memory.
    """
    encoded = tokenizer([caption], padding="longest", return_tensors="pt")
    input_ids = encoded["input_ids"]
    attention_mask = encoded["attention_mask"].bool()
    token_type_ids = encoded.get("token_type_ids", torch.zeros_like(input_ids))
    truncated = input_ids.shape[1] > max_text_len
    self_mask, position_ids = sub_sentence_masks(input_ids, max_text_len)
    cut = slice(0, max_text_len)
    input_ids, attention_mask, token_type_ids = (t[:, cut] for t in (input_ids, attention_mask, token_type_ids))
    return TextInputs(caption, input_ids, attention_mask, token_type_ids, position_ids, self_mask, truncated)


def sub_sentence_masks(input_ids: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The official sub-sentence attention mask and position ids of the first `keep` tokens.

    input_ids (B, L) -> (self_attention_mask (B, K, K) bool, True = may attend; position_ids (B, K) int64),
    K = min(L, keep). Equal to transformers' `generate_masks_with_special_tokens_and_transfer_map` on all L tokens
    cut to K afterwards: which sub-sentence a token belongs to (the next special token) is found over the whole
    sequence in linear time, and only the kept (K, K) block is compared.
    """
    batch, length = input_ids.shape
    special = torch.isin(input_ids, torch.tensor(SPECIAL_TOKEN_IDS, dtype=input_ids.dtype))
    positions = torch.arange(length).expand(batch, -1)
    previous = torch.where(special, positions, -1).cummax(1).values
    previous = torch.cat([previous.new_full((batch, 1), -1), previous[:, :-1]], dim=1)
    following = torch.where(special, positions, length).flip(1).cummin(1).values.flip(1)
    # a block closed by the first token, the last token or nothing is no sub-sentence
    valid = (following != 0) & (following != length - 1) & (following != length)
    previous, following, valid = previous[:, :keep], following[:, :keep], valid[:, :keep]
    kept = following.shape[1]
    same_block = (following.unsqueeze(2) == following.unsqueeze(1)) & valid.unsqueeze(1)
    mask = same_block | torch.eye(kept, dtype=torch.bool)
    position_ids = torch.where(valid, positions[:, :kept] - previous - 1, 0).clamp(min=0)
    return mask, position_ids


def load_tokenizer(vocab: str | Path | None = None):
    """A bert-base-uncased WordPiece tokenizer.

    `vocab` is a `vocab.txt` path (offline); without it the tokenizer comes from the Hugging Face Hub
    cache, downloading it on first use. A file that is not bert-base-uncased's vocabulary (the model needs its
    ids of [CLS], [SEP], "." and "?") raises `ConfigError` before anything is tokenized.
    """
    from transformers import BertTokenizer

    if vocab is None:
        from ..hub import load_hub_tokenizer

        return load_hub_tokenizer(TOKENIZER_REPO)
    path = Path(vocab)
    # by type first: a FIFO or device would block or never end
    if not path.is_file() or path.stat().st_size > _MAX_VOCAB_BYTES:
        problem = "does not exist" if not path.exists() else ("is not a regular file" if not path.is_file() else
                                                               f"is over {_MAX_VOCAB_BYTES >> 20} MB")
        raise ConfigError(f"vocabulary file {path.name} {problem}; pass bert-base-uncased's vocab.txt "
                          "(`referdino download` puts it in the Hugging Face cache)")
    try:
        # transformers 5 ignores `vocab_file=`; `vocab=` is the argument that loads the file.
        tokenizer = BertTokenizer(vocab=str(path), do_lower_case=True)
    except Exception as err:  # the tokenizers library raises a bare Exception for a file that is not UTF-8
        raise ConfigError(f"vocabulary file {path.name} cannot be read as a WordPiece vocab.txt ({type(err).__name__})"
                          "; pass bert-base-uncased's vocab.txt") from None
    check_vocabulary(tokenizer, path.name)
    return tokenizer


def check_vocabulary(tokenizer, name: str) -> None:
    """`ConfigError` unless the special tokens have bert-base-uncased's ids, which the model's text path uses."""
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if tuple(ids) != SPECIAL_TOKEN_IDS:
        raise ConfigError(f"vocabulary {name} is not bert-base-uncased's: {', '.join(SPECIAL_TOKENS)} have ids "
                          f"{ids}, expected {list(SPECIAL_TOKEN_IDS)}; pass bert-base-uncased's vocab.txt")


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
