"""Which model the workers on a queue run, published in Redis for the web process (which loads none)."""

from __future__ import annotations

import hashlib
import threading

from pydantic import BaseModel
from redis import Redis

from mochi_app.tokens import TokenCounter


class ServedModel(BaseModel):
    """What a worker announces after loading: the model's name and its tokenizer's fingerprint."""

    name: str
    is_tiny: bool
    tokenizer_sha256: str
    cost_profile: str | None = None  # whose timings its quotes come from (costs.profile_name)


def served_model_key(queue_name: str) -> str:
    return f"model:{queue_name}"


def tokenizer_key(sha256: str) -> str:
    return f"tokenizer:{sha256}"


def publish_served_model(  # noqa: PLR0917 - the card's fields
    redis: Redis, queue_name: str, name: str, is_tiny: bool, tokenizer_json: str, cost_profile: str | None = None
) -> ServedModel:
    """Called by each worker once its model is loaded; the tokenizer is stored once per content."""
    sha256 = hashlib.sha256(tokenizer_json.encode()).hexdigest()
    card = ServedModel(name=name, is_tiny=is_tiny, tokenizer_sha256=sha256, cost_profile=cost_profile)
    with redis.pipeline() as pipe:
        pipe.set(tokenizer_key(sha256), tokenizer_json)
        pipe.set(served_model_key(queue_name), card.model_dump_json())
        pipe.execute()
    return card


class ServedModels:
    """The web side: reads the current card and counts tokens with the workers' own tokenizer."""

    def __init__(self, redis: Redis, queue_name: str) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self._counters: dict[str, TokenCounter] = {}
        self._lock = threading.Lock()

    def current(self) -> ServedModel | None:
        raw = self.redis.get(served_model_key(self.queue_name))
        return None if raw is None else ServedModel.model_validate_json(raw)

    def count_tokens(self, text: str) -> int | None:
        """Tokens in `text` as the workers' model counts them; None until a worker has published its card."""
        counter = self._counter()
        return None if counter is None else counter(text)

    def _counter(self) -> TokenCounter | None:
        card = self.current()
        if card is None:
            return None
        with self._lock:
            counter = self._counters.get(card.tokenizer_sha256)
            if counter is None:
                raw = self.redis.get(tokenizer_key(card.tokenizer_sha256))
                if raw is None:
                    return None
                text = raw.decode() if isinstance(raw, bytes) else str(raw)
                counter = self._counters[card.tokenizer_sha256] = TokenCounter.from_json(text)
            return counter
