"""The harness's `children` factory: whatever a test starts is stopped at its end, the last started first."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.harness import Children

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def test_stop_all_stops_every_child_and_runs_each_undo_in_reverse_order(tmp_path: Path) -> None:
    children = Children()
    happened: list[str] = []
    first = children.launch(SLEEPER, {}, tmp_path / "first.log")
    children.defer(lambda: happened.append(f"first's undo; second stopped: {second.process.poll() is not None}"))
    second = children.launch(SLEEPER, {}, tmp_path / "second.log")
    children.defer(lambda: happened.append(f"second's undo; second running: {second.process.poll() is None}"))
    assert first.process.poll() is None and second.process.poll() is None

    children.stop_all()

    assert first.process.poll() is not None and second.process.poll() is not None
    assert happened == ["second's undo; second running: True", "first's undo; second stopped: True"]
    children.stop_all()  # a second call has nothing left to do
    assert len(happened) == 2


def test_the_fixture_stops_what_a_failing_test_started(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("from tests.conftest import children  # noqa: F401")
    pytester.makepyfile(
        f"""
        import sys
        def test_fails(children, tmp_path):
            child = children.launch({SLEEPER!r}, {{}}, tmp_path / "sleeper.log")
            (tmp_path.parent.parent / "pid").write_text(str(child.process.pid))
            assert False, "the test fails with its child running"
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--basetemp", str(pytester.path / "base"))
    result.assert_outcomes(failed=1)
    pid = int((pytester.path / "pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
