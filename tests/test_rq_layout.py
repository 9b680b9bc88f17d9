"""rq_layout against rq 3.0 itself: each key we edit directly is where RQ's own calls put and read the job."""

from __future__ import annotations

import uuid
from importlib.metadata import version

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from mochi_app.queue import RENDER_TASK
from mochi_app.rq_layout import RQLayout


@pytest.fixture
def rq(redis: Redis) -> Queue:
    return Queue(f"layout-{uuid.uuid4().hex[:8]}", connection=redis, serializer=JSONSerializer)


def enqueue(rq: Queue, name: str) -> str:
    return str(rq.enqueue(RENDER_TASK, name, job_id=f"{name}-{uuid.uuid4().hex[:6]}").id)


def test_the_layout_is_rq_3_0s() -> None:
    """A new rq may move these keys: read rq_layout.py against it, then pin the new version here."""
    assert version("rq").startswith("3.0."), version("rq")


def test_waiting_is_rqs_queue_in_order_and_a_job_moves_before_another(rq: Queue, redis: Redis) -> None:
    layout = RQLayout(rq)
    first, second, third = (enqueue(rq, name) for name in ("first", "second", "third"))
    assert layout.waiting(redis) == rq.get_job_ids() == [first, second, third]
    with redis.pipeline() as pipe:
        layout.move_before(pipe, third, first)
        pipe.execute()
    assert rq.get_job_ids() == [third, first, second]
    with redis.pipeline() as pipe:
        layout.drop_waiting(pipe, first)
        pipe.execute()
    assert rq.get_job_ids() == [third, second]
    assert rq.get_job_position(second) == 1


def test_a_taken_and_started_job_is_seen_and_forgotten_where_rq_keeps_it(rq: Queue, redis: Redis) -> None:
    layout = RQLayout(rq)
    job_id = enqueue(rq, "taken")
    assert layout.holds_job(job_id)
    taken = Queue.dequeue_any([rq], None, connection=redis, serializer=JSONSerializer)
    assert taken is not None and taken[0].id == job_id  # as a worker takes it
    assert rq.intermediate_queue.get_job_ids() == [job_id]
    assert layout.taken() == {job_id}
    worker = Worker([rq], connection=redis, serializer=JSONSerializer, name=f"w-{uuid.uuid4().hex[:6]}")
    execution = worker.prepare_execution(taken[0])  # as the worker starts it: RQ's started registry
    assert rq.started_job_registry.get_job_ids() == [job_id]
    assert layout.executions(redis, job_id) == [execution.composite_key.encode()]
    assert layout.executions(redis, "another-job") == []

    with redis.pipeline() as pipe:
        layout.forget(pipe, job_id, layout.executions(redis, job_id))
        pipe.execute()
    assert (rq.get_job_ids(), rq.intermediate_queue.get_job_ids(), rq.started_job_registry.get_job_ids()) == (
        [],
        [],
        [],
    )
    assert layout.taken() == set()
    taken[0].delete()
    assert not layout.holds_job(job_id)
