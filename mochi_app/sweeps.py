"""Seed sweeps: one request at several seeds, queued as one batch; what a sweep body asks, checked once."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mochi_app.schemas import MAX_SEED, InvalidRequest

MAX_SWEEP_SEEDS = 8  # the contact sheet's tiles; every limit counts a sweep as this many jobs at most
SWEEP_FIELDS = ("count", "seeds")  # beside the request's parameters, not part of it


@dataclass(frozen=True, slots=True)
class Sweep:
    """The request's parameters (without a seed) and the seeds to render it at, in order."""

    params: dict[str, Any]
    seeds: list[int]


def parse_sweep(body: Mapping[str, Any]) -> Sweep:
    """A `/sweep` body: the request's parameters and `count` (seeds drawn at random, or `seed`, `seed + 1`, …
    when `seed` is given) or `seeds` (a list of distinct seeds); InvalidRequest names what is wrong."""
    count, seeds = body.get("count"), body.get("seeds")
    params = {name: value for name, value in body.items() if name not in SWEEP_FIELDS}
    first = params.pop("seed", None)
    if (count is None) == (seeds is None):
        raise InvalidRequest(
            {"count": f"a sweep takes count (1 to {MAX_SWEEP_SEEDS} seeds) or seeds (a list of them), not "
             f"{'both' if count is not None else 'neither'}"}
        )  # fmt: skip
    if seeds is not None:
        if first is not None:
            raise InvalidRequest({"seed": "a sweep with seeds takes no seed: put every seed in the list"})
        return Sweep(params, _checked_seeds(seeds))
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SWEEP_SEEDS:
        raise InvalidRequest({"count": f"count must be a whole number from 1 to {MAX_SWEEP_SEEDS}, got {count!r}"})
    if first is None:
        return Sweep(params, _random_seeds(count))
    if isinstance(first, bool) or not isinstance(first, int) or not 0 <= first <= MAX_SEED - count + 1:
        raise InvalidRequest(
            {"seed": f"seed must be a whole number from 0 to {MAX_SEED - count + 1} for {count} seeds, got {first!r}"}
        )
    return Sweep(params, list(range(first, first + count)))


def _checked_seeds(seeds: Any) -> list[int]:
    if not isinstance(seeds, list) or not 1 <= len(seeds) <= MAX_SWEEP_SEEDS:
        raise InvalidRequest({"seeds": f"seeds must be a list of 1 to {MAX_SWEEP_SEEDS} seeds, got {seeds!r}"})
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise InvalidRequest({"seeds": f"each seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}"})
    if len(set(seeds)) != len(seeds):
        raise InvalidRequest({"seeds": f"the seeds must differ (the same seed makes the same video), got {seeds!r}"})
    return list(seeds)


def _random_seeds(count: int) -> list[int]:
    seeds: list[int] = []
    while len(seeds) < count:
        if (seed := secrets.randbelow(MAX_SEED + 1)) not in seeds:
            seeds.append(seed)
    return seeds
