"""JobStore: records at job:{id}, each account's index newest first, atomic updates, stable pages."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from redis import Redis

from mochi_app.records import JobRecord, JobStatus, Progress
from mochi_app.schemas import GenerationRequest, InvalidRequest
from mochi_app.store import JobStore


def make_record(account_id: str, created_at: float) -> JobRecord:
    request = GenerationRequest(prompt="a cat", seed=1)
    return JobRecord(
        job_id=str(uuid.uuid4()),
        account_id=account_id,
        request=request,
        num_frames=request.rendered_num_frames,
        created_at=created_at,
        progress=Progress(total=request.num_inference_steps),
    )


def test_records_use_the_documented_keys(redis: Redis) -> None:
    store = JobStore(redis)
    record = make_record("acct-keys", 1000.0)
    store.create(record)
    assert json.loads(redis.get(f"job:{record.job_id}"))["account_id"] == "acct-keys"  # type: ignore[arg-type]
    assert redis.zrange("account:acct-keys:jobs", 0, -1) == [record.job_id.encode()]
    assert store.get(record.job_id) == record


def test_a_jobs_live_preview_goes_when_it_ends(redis: Redis) -> None:
    store = JobStore(redis)
    record = make_record("acct-preview", 1000.0)
    store.create(record)
    store.update(record.job_id, lambda now: now.model_copy(update={"status": JobStatus.RUNNING}))
    store.keep_preview(record.job_id, b"RIFF-webp")
    store.update(record.job_id, lambda now: now.model_copy(update={"progress": Progress(step=3, total=64)}))
    assert store.preview(record.job_id) == b"RIFF-webp"  # a step's write keeps it
    store.update(record.job_id, lambda now: now.model_copy(update={"status": JobStatus.COMPLETED}))
    assert store.preview(record.job_id) is None


def test_unknown_job_reads_as_none(redis: Redis) -> None:
    store = JobStore(redis)
    assert store.get(str(uuid.uuid4())) is None
    assert store.update(str(uuid.uuid4()), lambda record: record) is None


def test_pages_are_newest_first_and_stable(redis: Redis) -> None:
    store = JobStore(redis)
    account = f"acct-{uuid.uuid4()}"
    records = [make_record(account, 1_700_000_000.0 + i * 0.001) for i in range(7)]
    for record in records:
        store.create(record)
    first = store.list_for_account(account, limit=3)
    second = store.list_for_account(account, limit=3, cursor=first.next_cursor)
    third = store.list_for_account(account, limit=3, cursor=second.next_cursor)
    seen = [r.job_id for page in (first, second, third) for r in page.records]
    assert seen == [r.job_id for r in reversed(records)]
    assert third.next_cursor is None


def test_other_accounts_jobs_are_not_listed(redis: Redis) -> None:
    store = JobStore(redis)
    mine, theirs = make_record("acct-a-list", 1.0), make_record("acct-b-list", 2.0)
    store.create(mine)
    store.create(theirs)
    assert [r.job_id for r in store.list_for_account("acct-a-list").records] == [mine.job_id]


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5", "9" * 30, "../../etc"])
def test_a_bad_cursor_is_refused(redis: Redis, cursor: str) -> None:
    with pytest.raises(InvalidRequest, match="cursor must be"):
        JobStore(redis).list_for_account("acct", cursor=cursor)


def test_concurrent_updates_are_not_lost(redis: Redis) -> None:
    store = JobStore(redis)
    record = make_record("acct-race", 1.0)
    store.create(record)

    def bump() -> None:
        for _ in range(25):
            store.update(record.job_id, lambda r: r.model_copy(update={"attempts": r.attempts + 1}))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get(record.job_id).attempts == 100  # type: ignore[union-attr]


def test_delete_removes_record_and_index_entry(redis: Redis) -> None:
    store = JobStore(redis)
    record = make_record("acct-del", 1.0)
    store.create(record)
    store.delete(record.job_id, record.account_id)
    assert store.get(record.job_id) is None
    assert redis.zcard("account:acct-del:jobs") == 0
