"""A CPU worker keeps freed memory for its next render: glibc stops mapping and unmapping the decode's buffers."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cpu_allocator import GLIBC_AS_IT_SHIPS, renders_in_a_fresh_worker
from mochi_app.allocator import KEEP_FREED_MEMORY, keep_freed_memory


@pytest.mark.slow
def test_a_cpu_render_reuses_the_memory_the_last_one_freed(tmp_path: Path) -> None:
    (kept,) = renders_in_a_fresh_worker(tmp_path, 1)["faults"]
    # The operator's own MALLOC_* setting wins (here glibc's default trim threshold): glibc as it ships.
    (handed_back,) = renders_in_a_fresh_worker(tmp_path, 1, **GLIBC_AS_IT_SHIPS)["faults"]
    assert handed_back > 100_000, handed_back  # about 1.5 GB of pages mapped afresh on every render
    assert kept < handed_back / 10, (kept, handed_back)


def test_an_operators_malloc_variables_win() -> None:
    for name in KEEP_FREED_MEMORY:
        assert keep_freed_memory({name: "65536"}) is False
