"""GPU-second budgets: holds, charges of what was used, the 429 with an exact Retry-After, set-budget, /session."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from mochi_app.accounts import AccountStore
from mochi_app.budgets import DAY_S, Budgets, OverBudget
from mochi_app.cli import main
from mochi_app.config import Settings
from mochi_app.guests import GUEST_PREFIX
from mochi_app.queue import JobQueue
from mochi_app.records import JobRecord, JobStatus
from mochi_app.schemas import InvalidRequest
from mochi_app.web import create_app
from tests.harness import SMALL, new_account


def end(queue: JobQueue, job_id: str, ran_s: float, finished_at: float) -> None:
    """The job ran for `ran_s` and completed at `finished_at`, as a worker records it."""

    def complete(record: JobRecord) -> JobRecord:
        return record.model_copy(
            update={"status": JobStatus.COMPLETED, "started_at": finished_at - ran_s, "finished_at": finished_at}
        )

    queue.store.update(job_id, complete)


def test_a_submit_holds_its_quote_and_the_end_charges_what_was_used(job_queue: JobQueue) -> None:
    owner = new_account()
    job_queue.budgets.set_daily(owner, 1000)
    record = job_queue.submit(owner, {"prompt": "a cat", **SMALL})
    assert record.quote is not None
    held = job_queue.budgets.balance(owner)
    assert held.held_gpu_s == pytest.approx(record.quote.run_s, abs=0.1) and held.used_gpu_s == 0
    end(job_queue, record.job_id, ran_s=record.quote.run_s * 3, finished_at=time.time())  # ran over its quote
    charged = job_queue.budgets.balance(owner)
    assert charged.held_gpu_s == 0
    assert charged.used_gpu_s == pytest.approx(record.quote.run_s * 3, abs=0.1)
    assert charged.left_gpu_s == pytest.approx(1000 - record.quote.run_s * 3, abs=0.2)


def test_a_cancelled_waiting_job_gives_its_hold_back_and_costs_nothing(job_queue: JobQueue) -> None:
    owner = new_account()
    record = job_queue.submit(owner, {"prompt": "a cat", **SMALL})
    job_queue.cancel(record.job_id)
    assert job_queue.budgets.balance(owner).model_dump(exclude={"daily_gpu_seconds", "left_gpu_s"}) == {
        "used_gpu_s": 0.0,
        "held_gpu_s": 0.0,
    }


def test_over_budget_is_refused_with_the_moment_it_fits(redis: Redis, settings: Settings) -> None:
    queue = JobQueue(redis, settings)
    owner = new_account()
    first = queue.submit(owner, {"prompt": "one", **SMALL})
    cost = first.quote.run_s if first.quote else 0.0
    queue.budgets.set_daily(owner, math.ceil(cost * 2.5))
    second = queue.submit(owner, {"prompt": "two", **SMALL})
    ended_at = time.time() - 600
    end(queue, first.job_id, ran_s=cost, finished_at=ended_at)  # charged now; frees 10 min less than a day on
    end(queue, second.job_id, ran_s=cost, finished_at=ended_at + 60)
    before = time.time()
    with pytest.raises(OverBudget) as refused:
        queue.submit(owner, {"prompt": "three", **SMALL})
    after = time.time()
    # Two jobs' worth used of 2.5: a third fits once the first charge is a day old.
    assert math.ceil(ended_at + DAY_S - after) <= refused.value.retry_after_s <= math.ceil(ended_at + DAY_S - before)
    assert f"{cost:.0f} GPU-seconds" in str(refused.value) and "it fits in" in str(refused.value)
    assert len(queue.store.list_for_account(owner).records) == 2  # nothing queued


def test_a_job_bigger_than_the_whole_allowance_says_so(job_queue: JobQueue) -> None:
    owner = new_account()
    job_queue.budgets.set_daily(owner, 1)
    with pytest.raises(InvalidRequest, match="more than your allowance of 1 in 24 h"):
        job_queue.submit(owner, {"prompt": "a cat", **SMALL})


def test_guests_get_their_own_default_and_overrides_win(redis: Redis, settings: Settings) -> None:
    budgets = Budgets(redis, replace(settings, daily_gpu_seconds=0, guest_daily_gpu_seconds=120))
    guest, named = f"{GUEST_PREFIX}{new_account()}", new_account()
    assert (budgets.daily(guest), budgets.daily(named)) == (120, 0)
    assert budgets.balance(named).left_gpu_s is None  # unlimited
    budgets.set_daily(guest, 30)
    assert budgets.balance(guest).left_gpu_s == 30


def test_set_budget_from_the_command_line(redis: Redis, settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    account, _ = AccountStore(redis).create(f"budget-{new_account()[5:]}")
    env = settings.to_env()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert main(["accounts", "set-budget", account.name, "600"]) == 0
        assert "600 GPU-seconds in any 24 h (600 left now)" in capsys.readouterr().out
        with pytest.raises(SystemExit) as unknown:
            main(["accounts", "set-budget", "nobody-here", "600"])
    assert unknown.value.code == 2 and "no account named 'nobody-here'" in capsys.readouterr().err
    assert Budgets(redis, settings).daily(account.name) == 600


def test_quote_over_rest_validates_like_generate_and_queues_nothing(redis: Redis, settings: Settings) -> None:
    account, key = AccountStore(redis).create(f"quote-{new_account()[5:]}")
    Budgets(redis, settings).set_daily(account.name, 50)
    bearer = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        quote = http.post("/quote", json={"prompt": "a cat", **SMALL}, headers=bearer).json()
        bad = http.post("/quote", json={"prompt": "a cat", "height": 1000}, headers=bearer)
        bad_generate = http.post("/generate", json={"prompt": "a cat", "height": 1000}, headers=bearer)
        session = http.get("/session", headers=bearer).json()
        assert http.get("/healthz").json()["queue_depth"] == 0
    assert quote["estimated_run_s"] == quote["cost"]["run_s"] > 0
    assert quote["estimated_wait_s"] is None and quote["live_workers"] == 0  # no worker on this queue
    assert quote["queue_position"] == 0 and quote["fits_budget"] is True
    assert quote["budget"] == {"daily_gpu_seconds": 50, "used_gpu_s": 0.0, "held_gpu_s": 0.0, "left_gpu_s": 50.0}
    assert (bad.status_code, bad.json()) == (bad_generate.status_code, bad_generate.json())
    assert bad.status_code == 422
    assert session["budget"]["left_gpu_s"] == 50.0


def test_the_429_over_rest_carries_retry_after_and_the_figures(redis: Redis, settings: Settings) -> None:
    account, key = AccountStore(redis).create(f"broke-{new_account()[5:]}")
    bearer = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as http:
        cost = http.post("/quote", json={"prompt": "a cat", **SMALL}, headers=bearer).json()["estimated_run_s"]
        Budgets(redis, settings).set_daily(account.name, math.ceil(cost * 1.5))
        assert http.post("/generate", json={"prompt": "a cat", **SMALL}, headers=bearer).status_code == 202
        refused = http.post("/generate", json={"prompt": "a cat", **SMALL}, headers=bearer)
        metrics = http.get("/metrics").text
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == str(DAY_S)  # all it has is held by a job still to run
    assert "you have" in refused.json()["detail"]
    assert "mochi_budget_refusals_total" in metrics and "mochi_quote_error_ratio_bucket" in metrics
