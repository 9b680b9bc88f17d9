"""Seed sweeps: one request at several seeds as one batch, counted as that many jobs by every limit; draft to final."""

from __future__ import annotations

import math
import uuid
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from mochi_app.accounts import AccountStore
from mochi_app.budgets import OverBudget
from mochi_app.config import Settings
from mochi_app.errors import BatchNotFound
from mochi_app.presets import PRESETS
from mochi_app.queue import JobQueue, SubmitOptions, TooBusy
from mochi_app.records import JobStatus
from mochi_app.schemas import MAX_SEED, InvalidRequest
from mochi_app.store import batch_key
from mochi_app.studio import Studio
from mochi_app.sweeps import MAX_SWEEP_SEEDS, parse_sweep
from mochi_app.web import create_app
from tests.harness import SMALL, new_account

CAT = {"prompt": "a cat", **SMALL}


@pytest.fixture
def studio(redis: Redis, settings: Settings) -> Studio:
    return Studio(redis, settings)


def test_count_with_a_seed_sweeps_the_seeds_from_it_and_without_one_draws_distinct_seeds() -> None:
    assert parse_sweep({**CAT, "seed": 41, "count": 3}).seeds == [41, 42, 43]
    drawn = parse_sweep({**CAT, "count": MAX_SWEEP_SEEDS}).seeds
    assert len(set(drawn)) == MAX_SWEEP_SEEDS and all(0 <= seed <= MAX_SEED for seed in drawn)
    listed = parse_sweep({**CAT, "seeds": [9, 3, 5]})
    assert listed.seeds == [9, 3, 5] and "seeds" not in listed.params and "seed" not in listed.params


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({}, "count", "not neither"),
        ({"count": 2, "seeds": [1, 2]}, "count", "not both"),
        ({"count": 0}, "count", "got 0"),
        ({"count": MAX_SWEEP_SEEDS + 1}, "count", f"from 1 to {MAX_SWEEP_SEEDS}"),
        ({"count": True}, "count", "got True"),
        ({"count": "3"}, "count", "got '3'"),
        ({"seeds": []}, "seeds", "got []"),
        ({"seeds": [1, 1]}, "seeds", "must differ"),
        ({"seeds": [1, -2]}, "seeds", "got -2"),
        ({"seeds": [1, 2], "seed": 3}, "seed", "takes no seed"),
        ({"count": 2, "seed": MAX_SEED}, "seed", f"got {MAX_SEED}"),
    ],
)
def test_a_bad_sweep_names_its_field_and_quotes_the_value(
    job_queue: JobQueue, redis: Redis, body: dict[str, Any], field: str, words: str
) -> None:
    owner = new_account()
    with pytest.raises(InvalidRequest) as refused:
        job_queue.sweep(owner, {**CAT, **body})
    assert list(refused.value.errors) == [field] and words in refused.value.errors[field]
    assert job_queue.depth() == 0 and not job_queue.store.list_for_account(owner).records


def test_a_sweep_queues_one_job_per_seed_in_one_batch_in_the_seeds_order(job_queue: JobQueue, redis: Redis) -> None:
    owner = new_account()
    records = job_queue.sweep(owner, {**CAT, "seeds": [7, 1, 5]})
    batch_id = records[0].batch_id
    assert batch_id is not None and str(uuid.UUID(batch_id)) == batch_id
    assert [record.request.seed for record in records] == [7, 1, 5]
    assert {record.batch_id for record in records} == {batch_id}
    assert len({record.request.model_copy(update={"seed": 0}) for record in records}) == 1  # only the seed differs
    assert job_queue.store.batch_job_ids(batch_id) == [record.job_id for record in records]
    assert job_queue.rq.job_ids == [record.job_id for record in records]
    gallery = [record.job_id for record in job_queue.store.list_for_account(owner).records]
    assert gallery == [record.job_id for record in reversed(records)]  # newest first, a millisecond apart


def test_a_sweep_waits_its_turn_as_that_many_submits_would(job_queue: JobQueue) -> None:
    sweeper, newcomer = new_account(), new_account()
    swept = [record.job_id for record in job_queue.sweep(sweeper, {**CAT, "count": 3})]
    single = job_queue.submit(newcomer, {"prompt": "mine", **SMALL}).job_id
    assert job_queue.rq.job_ids == [swept[0], single, swept[1], swept[2]]


def test_every_limit_counts_a_sweep_as_its_jobs_and_queues_all_or_none(redis: Redis, settings: Settings) -> None:
    queue = JobQueue(redis, replace(settings, max_pending_jobs=4), count_tokens=None)
    owner = new_account()
    queue.submit(owner, CAT)
    with pytest.raises(TooBusy, match="you have 1 jobs waiting and these 4 would make 5; the limit is 4"):
        queue.sweep(owner, {**CAT, "count": 4})
    assert queue.rq.count == 1
    assert len(queue.sweep(owner, {**CAT, "count": 3})) == 3

    rated = JobQueue(redis, replace(settings, submits_per_minute=5), count_tokens=None)
    hasty = new_account()
    rated.sweep(hasty, {**CAT, "count": 4})
    with pytest.raises(TooBusy, match="at most 5 submits a minute"):
        rated.sweep(hasty, {**CAT, "count": 2})

    waiting = queue.rq.count
    full = JobQueue(redis, replace(settings, max_queued_jobs=waiting + 2), count_tokens=None)
    with pytest.raises(TooBusy, match=f"{waiting} jobs are waiting and these 3 would make {waiting + 3}"):
        full.sweep(new_account(), {**CAT, "count": 3})

    guests = JobQueue(redis, replace(settings, max_pending_jobs_per_address=3), count_tokens=None)
    guests.sweep(f"guest-{uuid.uuid4().hex}", {**CAT, "count": 2}, "203.0.113.9")
    with pytest.raises(TooBusy, match="2 jobs from your address are waiting and these 2 would make 4"):
        guests.sweep(f"guest-{uuid.uuid4().hex}", {**CAT, "count": 2}, "203.0.113.9")


def test_a_sweep_must_fit_the_budget_whole(job_queue: JobQueue) -> None:
    owner = new_account()
    one = job_queue.quote(owner, CAT).cost.run_s
    job_queue.budgets.set_daily(owner, math.floor(one * 3.5))
    job_queue.submit(owner, CAT)
    with pytest.raises(OverBudget, match="these 3 jobs need about"):
        job_queue.sweep(owner, {**CAT, "count": 3})
    assert job_queue.budgets.balance(owner).held_gpu_s == pytest.approx(one, abs=0.1)
    job_queue.sweep(owner, {**CAT, "count": 2})
    assert job_queue.budgets.balance(owner).held_gpu_s == pytest.approx(3 * one, abs=0.1)
    with pytest.raises(InvalidRequest, match=r"more than your allowance .* or fewer seeds"):
        job_queue.sweep(owner, {**CAT, "count": 4})


def test_a_retried_sweep_with_its_idempotency_key_returns_the_same_batch(job_queue: JobQueue) -> None:
    owner, once = new_account(), SubmitOptions(idempotency_key=f"sweep-{uuid.uuid4()}")
    first = job_queue.sweep(owner, {**CAT, "count": 2}, options=once)
    again = job_queue.sweep(owner, {**CAT, "count": 2}, options=once)
    assert [record.job_id for record in again] == [record.job_id for record in first]
    assert job_queue.depth() == 2


def test_a_batch_is_its_owners_alone_and_cancels_whole(studio: Studio, redis: Redis) -> None:
    owner, other = new_account(), new_account()
    batch = studio.sweep(owner, {**CAT, "count": 3})
    assert batch.seeds == [job.request.seed for job in batch.jobs]
    assert batch.statuses == {JobStatus.PENDING: 3} and not batch.finished
    assert studio.batch(owner, batch.batch_id).seeds == batch.seeds
    for stranger, batch_id in ((other, batch.batch_id), (owner, str(uuid.uuid4())), (owner, "../../etc")):
        with pytest.raises(BatchNotFound):
            studio.batch(stranger, batch_id)
    with pytest.raises(BatchNotFound):
        studio.cancel_batch(other, batch.batch_id)
    assert studio.batch(owner, batch.batch_id).statuses == {JobStatus.PENDING: 3}  # the stranger changed nothing
    studio.cancel(owner, batch.jobs[0].job_id)
    cancelled = studio.cancel_batch(owner, batch.batch_id)
    assert cancelled.statuses == {JobStatus.CANCELLED: 3} and cancelled.finished
    assert studio.queue.depth() == 0
    for job in batch.jobs:
        studio.delete(owner, job.job_id)
    with pytest.raises(BatchNotFound):
        studio.batch(owner, batch.batch_id)
    assert not redis.exists(batch_key(batch.batch_id))


def test_make_final_renders_the_same_seed_and_shape_with_the_final_steps(studio: Studio) -> None:
    owner = new_account()
    draft = studio.sweep(owner, {**CAT, "num_frames": 30, "count": 2}).jobs[1]
    final = studio.make_final(owner, draft.job_id)
    assert final.job_id != draft.job_id and final.batch_id is None
    steps = PRESETS["Final"][0]
    assert final.request == draft.request.model_copy(update={"num_inference_steps": steps, "num_frames": 31})
    with pytest.raises(Exception, match="no job with id"):
        studio.make_final(new_account(), draft.job_id)


def test_sweeps_over_rest(redis: Redis, settings: Settings) -> None:
    _, key = AccountStore(redis).create(f"sweeper-{new_account()[5:]}")
    _, other_key = AccountStore(redis).create(f"bystander-{new_account()[5:]}")
    mine, theirs = {"Authorization": f"Bearer {key}"}, {"Authorization": f"Bearer {other_key}"}
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        made = http.post("/sweep", json={**CAT, "seed": 10, "count": 2}, headers=mine)
        batch_id = made.json()["batch_id"]
        read = http.get(f"/batches/{batch_id}", headers=mine)
        bad = http.post("/sweep", json={**CAT, "count": 99}, headers=mine)
        strangers = [
            http.get(f"/batches/{batch_id}", headers=theirs),
            http.post(f"/batches/{batch_id}/cancel", headers=theirs),
            http.post(f"/final/{made.json()['jobs'][0]['job_id']}", headers=theirs),
        ]
        missing = http.get(f"/batches/{uuid.uuid4()}", headers=mine)
        final = http.post(f"/final/{made.json()['jobs'][0]['job_id']}", headers=mine)
        cancelled = http.post(f"/batches/{batch_id}/cancel", headers=mine)
    assert made.status_code == 202 and made.headers["Location"] == f"/batches/{batch_id}"
    assert made.json()["seeds"] == [10, 11] and read.json()["seeds"] == [10, 11]
    assert [job["batch_id"] for job in read.json()["jobs"]] == [batch_id, batch_id]
    assert bad.status_code == 422 and "count" in bad.json()["errors"]
    assert [answer.status_code for answer in strangers] == [404, 404, 404]
    assert missing.status_code == 404 and "no batch with id" in missing.json()["detail"]
    assert final.status_code == 202 and final.json()["request"]["seed"] == 10
    assert cancelled.json()["statuses"] == {"CANCELLED": 2}
