"""Fixed-window counters in Redis: at most N events per window, and how long until the next window."""

from __future__ import annotations

import time
from collections.abc import Callable

from redis import Redis


def wait_s(redis: Redis, key_for: Callable[[int], str], window_s: int, limit: int, events: int = 1) -> int:
    """Counts `events` events in the current window (keys from `key_for(window number)`, kept two windows);
    0 while the window has seen at most `limit`, else the seconds until the next window starts."""
    now = time.time()
    window = int(now // window_s)
    key = key_for(window)
    with redis.pipeline() as pipe:
        pipe.incrby(key, events)
        pipe.expire(key, window_s * 2)
        count = int(pipe.execute()[0])
    return 0 if count <= limit else int((window + 1) * window_s - now) + 1
