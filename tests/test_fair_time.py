"""Fair GPU time with a real worker and the tiny model: cheap jobs of a second account pass a heavy
backlog, the wait and run ETAs, the decoding phase, calibration from the worker's own timings, budgets."""

from __future__ import annotations

import math
import time

import pytest
from redis import Redis

from mochi_app.budgets import DAY_S, OverBudget
from mochi_app.costs import fit_key
from mochi_app.eta import Phase
from mochi_app.job_events import JobEvent, events_key
from mochi_app.public import JobPublic
from mochi_app.queue import JobQueue
from mochi_app.studio import Studio
from tests.harness import Child, finished, new_account

pytestmark = pytest.mark.slow

# On the tiny model the decode dominates: HEAVY decodes six times QUARTER's latent pixels (6 latents of
# 256x256 against 2 of 128x256), which with the fixed costs makes QUARTER about a quarter of HEAVY.
HEAVY = {"num_frames": 31, "height": 256, "width": 256, "num_inference_steps": 4}
QUARTER = {"num_frames": 7, "height": 128, "width": 256, "num_inference_steps": 4}


def test_a_second_accounts_cheap_jobs_all_start_before_the_heavy_accounts_second(
    worker: Child, worker_queue: JobQueue, redis: Redis
) -> None:
    studio = Studio(redis, worker_queue.settings)
    a, b = new_account(), new_account()
    heavy = [worker_queue.submit(a, {"prompt": f"heavy {n}", **HEAVY}) for n in range(4)]
    light = [worker_queue.submit(b, {"prompt": f"light {n}", **QUARTER}) for n in range(4)]
    assert heavy[0].quote and light[0].quote
    # Start tags: the fourth light job starts at 3 light costs, before the heavy account's second at 1 heavy.
    assert heavy[0].quote.run_s > 3.2 * light[0].quote.run_s
    waiting = studio.status(b, light[-1].job_id)
    assert waiting.status.value == "PENDING" and waiting.eta_start_s is not None and waiting.eta_start_s > 0
    ended = {job.job_id: finished(worker_queue, job.job_id) for job in [*heavy, *light]}
    assert all(record.status.value == "COMPLETED" for record in ended.values())
    second_heavy_start = ended[heavy[1].job_id].started_at or 0.0
    assert all((ended[job.job_id].started_at or math.inf) < second_heavy_start for job in light)

    # While its last step was done and the video not yet, the job said so, with the decode's estimate.
    events = [JobEvent.from_entry(*entry) for entry in redis.xrange(events_key(heavy[0].job_id))]
    decoding = [JobPublic.of(event.record) for event in events if event.record.denoised_at is not None]
    assert decoding and decoding[0].phase is Phase.DECODING and decoding[0].status.value == "RUNNING"

    # The worker's timings calibrated its profile, and the quotes now come from them.
    card = studio.model()
    assert card is not None and card.cost_profile and card.cost_profile.startswith("tiny@")
    assert redis.exists(fit_key(worker_queue.settings.queue_name, card.cost_profile))
    quote = studio.quote(a, {"prompt": "again", **HEAVY})
    assert quote.calibrated_on >= 8 and quote.live_workers >= 1 and quote.estimated_wait_s is not None


def test_the_budget_flow_quote_submit_until_refused_then_the_exact_wait(
    worker: Child, worker_queue: JobQueue, redis: Redis
) -> None:
    studio = Studio(redis, worker_queue.settings)
    owner = new_account()
    cost = studio.quote(owner, {"prompt": "a fox", **QUARTER}).estimated_run_s
    worker_queue.budgets.set_daily(owner, math.ceil(cost * 2.5))
    ran = [finished(worker_queue, studio.submit(owner, {"prompt": f"fox {n}", **QUARTER}).job_id) for n in range(2)]
    balance = studio.budget(owner)
    assert balance.used_gpu_s == pytest.approx(sum(record.run_s for record in ran), abs=0.06)  # shown to 0.1 s
    assert balance.held_gpu_s == 0
    for again in range(10):  # the two ran quicker than quoted: spend the rest, then one more is refused
        if not studio.quote(owner, {"prompt": "a fox", **QUARTER}).fits_budget:
            break
        finished(worker_queue, studio.submit(owner, {"prompt": f"fox again {again}", **QUARTER}).job_id)
    charges = sorted(record.finished_at or 0.0 for record in worker_queue.store.list_for_account(owner).records)
    before = time.time()
    with pytest.raises(OverBudget) as refused:
        studio.submit(owner, {"prompt": "one too many", **QUARTER})
    after = time.time()
    # The wait is exactly until one of the charges turns a day old (which one depends on how long each ran).
    wait_s = refused.value.retry_after_s
    assert any(math.ceil(c + DAY_S - after) <= wait_s <= math.ceil(c + DAY_S - before) for c in charges), wait_s
    assert studio.budget(owner).left_gpu_s is not None
