"""How every process finds the queue server and connects: MOCHI_REDIS_URL, or the URL the embedded one recorded."""

from __future__ import annotations

from pathlib import Path

from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from mochi_app.config import Settings

URL_FILENAME = "server.url"  # in the embedded server's folder: its URL, for the other processes
REDIS_RETRIES = 3


class QueueUnavailable(RuntimeError):
    """No Redis-compatible server answers where the settings say it is."""


def queue_url(settings: Settings) -> str:
    """`MOCHI_REDIS_URL`, else the URL the embedded server under `MOCHI_DATA_DIR` recorded."""
    url = settings.redis_url or recorded_url(settings.redis_dir)
    if not url:
        raise QueueUnavailable(
            f"no queue server: set MOCHI_REDIS_URL, or start `python app.py` with MOCHI_DATA_DIR={settings.data_dir}"
        )
    return url


def redis_client(url: str, timeout_s: float | None = None) -> Redis:
    """A client that gives up on a vanished server within about a second (redis-py's default
    retries for several): callers then answer 503, or render on and record the result later."""
    retry = Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.5), retries=REDIS_RETRIES)
    return Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=retry)


def connect(settings: Settings) -> Redis:
    """A client for the server `queue_url` names, once it has answered."""
    url = queue_url(settings)
    client = redis_client(url)
    try:
        client.ping()
    except RedisError as exc:
        raise QueueUnavailable(f"the queue server at {url} does not answer: {exc}") from None
    return client


def recorded_url(directory: Path) -> str:
    try:
        return (directory / URL_FILENAME).read_text().strip()
    except FileNotFoundError:
        return ""
