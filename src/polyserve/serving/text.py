"""What the emulated engine reads and writes instead of tokens.

Input: a prompt's token count is its number of whitespace-separated words (at least 1, as a tokenizer adds a
BOS token); a chat request counts the words of all message contents joined. Output: one deterministic filler
word per token, so a client can count tokens by chunks and compare texts across runs.
"""

from __future__ import annotations

FILLER = (
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "calm",
    "owls",
    "watch",
    "from",
    "an",
    "old",
    "oak",
    "near",
    "the",
    "river",
    "bank",
    "under",
    "pale",
    "morning",
    "light",
    "and",
    "soft",
    "wind",
)


def count_words(text: str) -> int:
    return len(text.split())


def prompt_tokens(words: int) -> int:
    """Prompt tokens for a prompt of ``words`` words (a BOS token keeps an empty prompt at 1)."""
    return max(1, words)


def output_word(k: int) -> str:
    """Output token ``k`` (0-based) as text: a word, with a leading space after the first."""
    w = FILLER[k % len(FILLER)]
    return w if k == 0 else " " + w


def output_text(n: int) -> str:
    return "".join(output_word(k) for k in range(n))
