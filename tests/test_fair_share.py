"""Fair share by predicted GPU time: start tags on a virtual clock, the window, no starvation, the index's upkeep."""

from __future__ import annotations

from dataclasses import replace

from redis import Redis

from mochi_app.config import Settings
from mochi_app.fair_share import start_in_s
from mochi_app.queue import JobQueue
from mochi_app.records import JobStatus
from mochi_app.recovery import Recovery
from tests.harness import SMALL, new_account

HEAVY = {**SMALL, "num_inference_steps": 64, "height": 480, "width": 848}  # about 4x SMALL's predicted cost
QUARTER = {**SMALL, "num_inference_steps": 16, "height": 480, "width": 848}


def tag(queue: JobQueue, job_id: str) -> float:
    score = queue.redis.zscore(queue.fair.tags_key, job_id)
    assert score is not None
    return float(score)


def test_cheap_jobs_of_a_second_account_all_go_before_the_heavy_accounts_second(job_queue: JobQueue) -> None:
    a, b = new_account(), new_account()
    heavy = [job_queue.submit(a, {"prompt": f"heavy {n}", **HEAVY}) for n in range(4)]
    light = [job_queue.submit(b, {"prompt": f"light {n}", **QUARTER}) for n in range(4)]
    assert heavy[0].quote and light[0].quote
    assert 3 < heavy[0].quote.run_s / light[0].quote.run_s < 5  # the arithmetic's ratio, before any timing
    order = job_queue.rq.job_ids
    assert order.index(heavy[1].job_id) > max(order.index(job.job_id) for job in light)
    assert order.index(heavy[0].job_id) < order.index(light[-1].job_id)  # the first heavy one kept its turn


def test_equal_jobs_still_take_turns(job_queue: JobQueue) -> None:
    a, b = new_account(), new_account()
    first = [job_queue.submit(a, {"prompt": f"a {n}", **SMALL}).job_id for n in range(3)]
    second = [job_queue.submit(b, {"prompt": f"b {n}", **SMALL}).job_id for n in range(3)]
    assert job_queue.rq.job_ids == [first[0], second[0], first[1], second[1], first[2], second[2]]


def test_nothing_passes_the_lowest_waiting_job(job_queue: JobQueue) -> None:
    waiting = job_queue.submit(new_account(), {"prompt": "patient", **HEAVY})
    # A fresh account's cheapest job starts level with the job due next, so it goes behind it.
    newcomer = job_queue.fair.place(job_queue.redis, new_account(), 0.001)
    assert newcomer.tag == tag(job_queue, waiting.job_id)
    assert newcomer.pivot is None and newcomer.position == 1


def test_a_newcomer_waits_behind_at_most_one_job_however_long_the_wall_clock_ran(job_queue: JobQueue) -> None:
    """The virtual time is the lowest waiting tag, not the wall clock: a backlog that started long ago (or a
    worker slower than its quotes) gives its account no earlier tags than a newcomer's."""
    hog = new_account()
    backlog = [job_queue.submit(hog, {"prompt": f"clip {n}", **SMALL}).job_id for n in range(6)]
    for job_id in backlog:  # as if submitted an hour ago to a worker that ran slower than its quotes
        job_queue.redis.zincrby(job_queue.fair.tags_key, -3600.0, job_id)
    newcomer = job_queue.submit(new_account(), {"prompt": "mine", **SMALL})
    assert job_queue.position(newcomer.job_id) == 1
    job_queue.rq.remove(backlog[0])  # a worker takes the first; the record says so a moment later
    job_queue.store.update(backlog[0], lambda record: record.model_copy(update={"status": JobStatus.RUNNING}))
    second = job_queue.submit(new_account(), {"prompt": "also mine", **SMALL})
    assert job_queue.rq.job_ids[:3] == [newcomer.job_id, second.job_id, backlog[1]]


def test_a_newcomer_starts_level_with_the_job_in_service_ahead_of_the_busy_accounts_next(job_queue: JobQueue) -> None:
    hog = new_account()
    backlog = [job_queue.submit(hog, {"prompt": f"clip {n}", **SMALL}).job_id for n in range(4)]
    job_queue.rq.remove(backlog[0])  # a worker takes the first and starts it
    job_queue.store.update(backlog[0], lambda record: record.model_copy(update={"status": JobStatus.RUNNING}))
    drafts = [job_queue.submit(new_account(), {"prompt": f"draft {n}", **SMALL}).job_id for n in range(2)]
    assert job_queue.rq.job_ids[:3] == [*drafts, backlog[1]]


def test_with_nothing_waiting_a_newcomer_starts_at_the_last_started_tag(job_queue: JobQueue) -> None:
    first = job_queue.submit(new_account(), {"prompt": "alone", **SMALL})
    job_queue.cancel(first.job_id)
    again = job_queue.fair.place(job_queue.redis, new_account(), 1.0)
    assert again.tag == tag(job_queue, first.job_id) and again.position == 0


def test_an_accounts_debt_never_exceeds_the_window(redis: Redis, settings: Settings) -> None:
    queue = JobQueue(redis, replace(settings, fair_share_window_s=5))
    hog = new_account()
    jobs = [queue.submit(hog, {"prompt": f"clip {n}", **HEAVY}) for n in range(6)]
    cost = jobs[0].quote.run_s if jobs[0].quote else 0.0
    assert cost > 5
    assert tag(queue, jobs[-1].job_id) <= tag(queue, jobs[0].job_id) + 5  # not five costs ahead: the window caps it
    newcomer = queue.submit(new_account(), {"prompt": "mine", **HEAVY})
    assert queue.position(newcomer.job_id) == 1  # behind the first, ahead of the rest of the hog's backlog


def test_a_cancelled_or_started_job_leaves_the_accounts_count(redis: Redis, settings: Settings) -> None:
    queue = JobQueue(redis, replace(settings, max_pending_jobs=2))
    owner = new_account()
    first = queue.submit(owner, {"prompt": "one", **SMALL})
    queue.submit(owner, {"prompt": "two", **SMALL})
    queue.cancel(first.job_id)
    third = queue.submit(owner, {"prompt": "three", **SMALL})  # the cancelled one no longer counts
    assert queue.fair.waiting_in(redis, queue.fair.account_key(owner))[0] == 2
    assert redis.zscore(queue.fair.account_key(owner), first.job_id) is None  # dropped as it was met
    assert queue.redis.zscore(queue.fair.tags_key, third.job_id) is not None


def test_a_job_put_back_at_the_front_keeps_its_place_ahead_of_every_tag(job_queue: JobQueue) -> None:
    a = new_account()
    running = job_queue.submit(a, {"prompt": "lost", **SMALL})
    job_queue.rq.remove(running.job_id)  # as a worker takes it

    def run(record):  # type: ignore[no-untyped-def]
        return record.model_copy(update={"status": JobStatus.RUNNING, "worker_id": "w1", "attempts": 1})

    job_queue.store.update(running.job_id, run)
    Recovery(job_queue).recover(running.job_id, "w1")
    assert job_queue.redis.zscore(job_queue.fair.tags_key, running.job_id) is None
    newcomer = job_queue.submit(new_account(), {"prompt": "new", **SMALL})
    assert job_queue.rq.job_ids == [running.job_id, newcomer.job_id]


def test_the_start_estimate_hands_each_job_to_the_first_free_worker() -> None:
    assert start_in_s([], [], 0) is None  # no worker: nobody can say
    assert start_in_s([], [], 1) == 0
    assert start_in_s([30.0], [10.0, 20.0], 1) == 60
    assert start_in_s([30.0], [10.0, 20.0], 2) == 30  # the idle worker runs both: 10 s, then 20 more
    assert start_in_s([5.0, 40.0], [10.0], 2) == 15
