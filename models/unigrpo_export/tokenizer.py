"""Word-level Hugging Face tokenizer for a closed-vocabulary world."""
from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers

SPECIALS = ["<pad>", "<bos>", "<think>", "</think>", "<img>", "<unk>"]


def build_word_tokenizer(texts) -> Tokenizer:
    words = set()
    pre = pre_tokenizers.Whitespace()
    for t in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(t))
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for w in sorted(words):
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    # Special tokens are matched whole before pre-tokenisation (else "</think>" splits into
    # "</", "think", ">") and skipped when decoding.
    tok.add_special_tokens(SPECIALS)
    return tok
