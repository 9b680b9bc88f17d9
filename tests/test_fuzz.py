"""Schema-driven fuzzing of the REST API on a live server (schemathesis): no input gets a 5xx."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from mochi_app.config import Settings
from tests.harness import start_web

pytestmark = pytest.mark.slow  # starts processes: see README, "Tests"


@pytest.fixture(scope="module")
def api_schema(data_dir: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A web process on a queue no worker serves: fuzzed jobs wait there and cost nothing."""
    fuzzed = replace(Settings(data_dir=data_dir, redis_url=redis_url), queue_name=f"fuzz-{uuid.uuid4().hex[:8]}")
    child, url = start_web(fuzzed, tmp_path_factory.mktemp("fuzz") / "web.log")
    yield schemathesis.openapi.from_url(f"{url}/openapi.json")
    child.stop()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_server_error(case: schemathesis.Case) -> None:
    response = case.call(timeout=10)
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
