"""Counts a prompt's T5 tokens with the `tokenizers` library alone, so the web process needs no torch."""

from __future__ import annotations

from typing import Any


class TokenCounter:
    """Callable: the number of tokens the pipeline's tokenizer makes of a text, end-of-text included."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __call__(self, text: str) -> int:
        return len(self._tokenizer.encode(text).ids)

    @classmethod
    def from_json(cls, tokenizer_json: str) -> TokenCounter:
        """From the text of a `tokenizer.json` (what workers publish beside their served model)."""
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(tokenizer_json))

    @classmethod
    def tiny(cls) -> TokenCounter:
        from mochi_app.tiny_model import build_tiny_tokenizer

        return cls(build_tiny_tokenizer())
