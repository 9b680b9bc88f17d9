"""Idempotent submits (`Idempotency-Key`) and deadlines (`Cancel-After`)."""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from redis import Redis

from mochi_app.config import Settings
from mochi_app.fair_share import FairShare
from mochi_app.queue import DEADLINE_MISSED, JobQueue, SubmitOptions
from mochi_app.records import JobStatus
from mochi_app.runner import JobRunner
from mochi_app.schemas import InvalidRequest
from mochi_app.storage import open_storage
from mochi_app.store import account_jobs_key
from mochi_app.tokens import TokenCounter
from mochi_app.web import create_app
from tests.harness import SMALL, Children, new_account
from tests.test_storage import StillRenderer

PARAMS = {"prompt": "a lantern floats up", **SMALL}


def test_a_retried_submit_returns_the_same_job_and_another_body_is_a_conflict(
    settings: Settings, redis: Redis, two_accounts: tuple[str, str, str]
) -> None:
    account, key, _ = two_accounts
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        first = http.post("/generate", json=PARAMS, headers={**auth, "Idempotency-Key": "order-17"})
        again = http.post("/generate", json=PARAMS, headers={**auth, "Idempotency-Key": "order-17"})
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json() | {"queue_position": again.json()["queue_position"]}
        assert redis.zcard(account_jobs_key(account)) == 1
        assert JobQueue(redis, settings).rq.job_ids == [first.json()["job_id"]]

        other = http.post(
            "/generate", json={**PARAMS, "prompt": "another"}, headers={**auth, "Idempotency-Key": "order-17"}
        )
        assert other.status_code == 409 and "Idempotency-Key was used" in other.json()["detail"]
        fresh = http.post("/generate", json=PARAMS, headers={**auth, "Idempotency-Key": "order-18"})
        assert fresh.status_code == 202 and fresh.json()["job_id"] != first.json()["job_id"]
        plain = http.post("/generate", json=PARAMS, headers=auth)  # no key: a new job every time
        assert plain.json()["job_id"] not in {first.json()["job_id"], fresh.json()["job_id"]}

        for bad in ("has space", "\t", "x" * 256):
            refused = http.post("/generate", json=PARAMS, headers={**auth, "Idempotency-Key": bad})
            assert refused.status_code == 422, (bad, refused.text)
        assert redis.zcard(account_jobs_key(account)) == 3


def test_keys_are_each_accounts_own(settings: Settings, redis: Redis, count_tokens: TokenCounter) -> None:
    queue = JobQueue(redis, settings, count_tokens)
    mine = queue.submit(new_account(), PARAMS, options=SubmitOptions(idempotency_key="k"))
    theirs = queue.submit(new_account(), {**PARAMS, "prompt": "theirs"}, options=SubmitOptions(idempotency_key="k"))
    assert mine.job_id != theirs.job_id  # no conflict, and no way to learn another account's job by its key


def test_a_key_whose_job_was_deleted_makes_a_new_job(
    settings: Settings, redis: Redis, count_tokens: TokenCounter
) -> None:
    queue, account = JobQueue(redis, settings, count_tokens), new_account()
    first = queue.submit(account, PARAMS, options=SubmitOptions(idempotency_key="k"))
    queue.store.delete(first.job_id, account)
    second = queue.submit(account, PARAMS, options=SubmitOptions(idempotency_key="k"))
    assert second.job_id != first.job_id and queue.store.get(second.job_id) is not None


def test_racing_submits_with_one_key_make_one_job(
    settings: Settings, redis_url: str, count_tokens: TokenCounter
) -> None:
    account, keys = new_account(), [f"key-{n}" for n in range(100)]
    made: list[str] = []
    failures: list[BaseException] = []

    def client(seed: int) -> None:
        with Redis.from_url(redis_url) as own:
            queue = JobQueue(own, settings, count_tokens)
            for key in random.Random(seed).sample(keys, len(keys)):
                try:
                    made.append(queue.submit(account, PARAMS, options=SubmitOptions(idempotency_key=key)).job_id)
                except Exception as exc:
                    failures.append(exc)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(made) == 1000 and len(set(made)) == 100
    with Redis.from_url(redis_url) as check:
        assert check.zcard(account_jobs_key(account)) == 100


@pytest.mark.slow
def test_a_thousand_submits_with_a_hundred_keys_from_ten_clients_make_a_hundred_jobs(
    module_settings: Settings, redis: Redis, children: Children, tmp_path: Path, two_accounts: tuple[str, str, str]
) -> None:
    """Through a real web process: ten HTTP clients send each of 100 keys once, in their own orders."""
    account, key, _ = two_accounts
    auth = {"Authorization": f"Bearer {key}"}
    _, url = children.web(replace(module_settings, max_pending_jobs=200), tmp_path / "web.log")
    answers: list[httpx.Response] = []

    def client(seed: int) -> None:
        with httpx.Client(base_url=url, headers=auth, timeout=60) as http:
            for n in random.Random(seed).sample(range(100), 100):
                answers.append(http.post("/generate", json=PARAMS, headers={"Idempotency-Key": f"batch-{n}"}))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 1000 and {answer.status_code for answer in answers} == {202}
    assert len({answer.json()["job_id"] for answer in answers}) == 100
    assert redis.zcard(account_jobs_key(account)) == 100


def test_a_job_not_started_by_its_deadline_ends_cancelled_saying_why(
    settings: Settings, redis: Redis, count_tokens: TokenCounter
) -> None:
    queue = JobQueue(redis, settings, count_tokens)
    waiting = queue.submit(new_account(), PARAMS, options=SubmitOptions(cancel_after="90s"))
    taken = queue.submit(new_account(), PARAMS, options=SubmitOptions(cancel_after="1m"))
    patient = queue.submit(new_account(), PARAMS, options=SubmitOptions(cancel_after="1h30m"))
    assert waiting.deadline is not None and abs(waiting.deadline - waiting.created_at - 90) < 1e-6
    assert patient.deadline is not None and abs(patient.deadline - patient.created_at - 5400) < 1e-6

    # A worker that takes a job past its deadline does not render it.
    runner = JobRunner(queue, StillRenderer(), settings, open_storage(settings), worker_id="w")
    assert queue.store.update(taken.job_id, lambda r: r.model_copy(update={"deadline": r.created_at - 1}))
    runner.run(taken.job_id)
    ended = queue.store.get(taken.job_id)
    assert ended is not None and (ended.status, ended.error, ended.started_at) == (
        JobStatus.CANCELLED,
        DEADLINE_MISSED,
        None,
    )

    # The chore ends the waiting ones past theirs, and leaves the others waiting.
    assert queue.cancel_overdue(now=waiting.created_at + 120) == 1
    expired, kept = queue.store.get(waiting.job_id), queue.store.get(patient.job_id)
    assert expired is not None and (expired.status, expired.error) == (JobStatus.CANCELLED, DEADLINE_MISSED)
    assert kept is not None and kept.status is JobStatus.PENDING
    assert waiting.job_id not in queue.rq.job_ids and patient.job_id in queue.rq.job_ids


@pytest.mark.parametrize("bad", ["soon", "0s", "8d", "-5", "1h-2m", "", "5 m"])
def test_a_cancel_after_that_is_not_a_duration_is_refused(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="Cancel-After"):
        SubmitOptions(cancel_after=bad).cancel_after_s()


def test_a_submit_that_races_its_own_key_at_the_limit_returns_the_job_not_a_refusal(
    settings: Settings, redis: Redis, count_tokens: TokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst moment: the other submit with this key lands after we found no claim but before we count
    the waiting jobs, which then fill the account's limit. That count is stale: read again, not refused."""
    account, options = new_account(), SubmitOptions(idempotency_key="the-one")
    tight = replace(settings, max_pending_jobs=1)
    ours, theirs = JobQueue(redis, tight, count_tokens), JobQueue(Redis.from_url(settings.redis_url or ""), tight)
    landed: list[str] = []
    waiting_in = FairShare.waiting_in

    def racing(fair: FairShare, client: Any, key: str) -> tuple[int, list[str]]:
        if fair is ours.fair and not landed:
            landed.append(theirs.submit(account, PARAMS, options=options).job_id)
        return waiting_in(fair, client, key)

    monkeypatch.setattr(FairShare, "waiting_in", racing)
    assert ours.submit(account, PARAMS, options=options).job_id == landed[0]
    assert redis.zcard(account_jobs_key(account)) == 1
