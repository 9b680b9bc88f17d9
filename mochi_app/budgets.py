"""GPU-second budgets: each account's allowance over any 24 h, what it has used and holds, and the refusal."""

from __future__ import annotations

import math
import time
from typing import cast

from pydantic import BaseModel, Field
from redis import Redis
from redis.client import Pipeline

from mochi_app.accounts import FREE_ACCOUNT_PREFIXES
from mochi_app.config import Settings
from mochi_app.records import JobRecord, JobStatus
from mochi_app.schemas import InvalidRequest
from mochi_app.tallies import BUDGET_REFUSALS_TOTAL, metrics_key

DAY_S = 24 * 3600
BUDGETS_KEY = "budgets"  # hash: account id -> its daily GPU-seconds, set by `accounts set-budget`
Reader = Redis | Pipeline


def used_key(account_id: str) -> str:
    """A sorted set of `{job_id}:{seconds}` by when each job ended: the last 24 h's charges."""
    return f"budget:{account_id}:used"


def held_key(account_id: str) -> str:
    """A hash of job id -> quoted seconds, for the account's jobs waiting or running."""
    return f"budget:{account_id}:held"


class Budget(BaseModel):
    """An account's GPU time: its allowance over any 24 h, what it used, what its unfinished jobs hold."""

    daily_gpu_seconds: int = Field(description="GPU-seconds the account may use in any 24 h; 0: unlimited")
    used_gpu_s: float = Field(description="GPU-seconds its jobs that ended in the last 24 h used")
    held_gpu_s: float = Field(description="GPU-seconds quoted for its jobs still waiting or running")
    left_gpu_s: float | None = Field(description="what it may still ask for now; None: unlimited")


class OverBudget(Exception):
    """A submit whose quote is more than the account has left; `retry_after_s` says when it would fit."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Budgets:
    """Allowances and balances in Redis; the charges themselves are written by record_usage."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    def set_daily(self, account_id: str, seconds: int) -> None:
        """Override the default allowance for one account (0: unlimited)."""
        if seconds < 0:
            raise ValueError(f"a budget is 0 (unlimited) or more GPU-seconds, got {seconds}")
        self.redis.hset(BUDGETS_KEY, account_id, seconds)

    def daily(self, account_id: str, reader: Reader | None = None) -> int:
        raw = (reader or self.redis).hget(BUDGETS_KEY, account_id)
        if raw is not None:
            return int(raw)
        if account_id.startswith(FREE_ACCOUNT_PREFIXES):
            return self.settings.guest_daily_gpu_seconds
        return self.settings.daily_gpu_seconds

    @staticmethod
    def watched(account_id: str) -> list[str]:
        """The keys a submit WATCHes so that two racing submits cannot both spend the same balance."""
        return [used_key(account_id), held_key(account_id), BUDGETS_KEY]

    def balance(self, account_id: str, now: float | None = None, reader: Reader | None = None) -> Budget:
        client = reader or self.redis
        moment = time.time() if now is None else now
        daily = self.daily(account_id, client)
        used = sum(amount for _, amount in _charges(client, account_id, moment))
        held = sum(float(value) for value in cast(list[bytes], client.hvals(held_key(account_id))))
        left = None if daily == 0 else round(max(0.0, daily - used - held), 1)
        return Budget(daily_gpu_seconds=daily, used_gpu_s=round(used, 1), held_gpu_s=round(held, 1), left_gpu_s=left)

    def check(self, account_id: str, cost_s: float, now: float, reader: Reader | None = None, jobs: int = 1) -> Budget:
        """The balance, if `cost_s` (of `jobs` jobs: a sweep's) fits in it; else OverBudget with the exact wait
        (or InvalidRequest when the jobs are more than the whole allowance)."""
        client = reader or self.redis
        budget = self.balance(account_id, now, client)
        if budget.left_gpu_s is None or cost_s <= budget.left_gpu_s:
            return budget
        self.redis.incr(metrics_key(BUDGET_REFUSALS_TOTAL))
        daily = budget.daily_gpu_seconds
        if cost_s > daily:
            raise InvalidRequest(
                {"budget": f"{_these(jobs)} about {cost_s:.0f} GPU-seconds, more than your allowance of {daily} "
                 f"in 24 h: try fewer frames, a smaller size or fewer steps{'' if jobs == 1 else ', or fewer seeds'}"}
            )  # fmt: skip
        need = budget.used_gpu_s + budget.held_gpu_s + cost_s - daily
        retry_after_s = DAY_S
        freed = 0.0
        for ended_at, amount in _charges(client, account_id, now):  # oldest first: each expires a day after it
            freed += amount
            if freed >= need:
                retry_after_s = max(1, math.ceil(ended_at + DAY_S - now))
                break
        raise OverBudget(
            f"{_these(jobs)} about {cost_s:.0f} GPU-seconds and you have {budget.left_gpu_s:.0f} of your "
            f"{daily} left for now (your jobs used {budget.used_gpu_s:.0f} in the last 24 h and "
            f"{budget.held_gpu_s:.0f} are held for those still to finish); it fits in {retry_after_s} s",
            retry_after_s,
        )

    @staticmethod
    def hold(pipe: Pipeline, record: JobRecord) -> None:
        """Hold the new job's quote against its account until it ends, inside the submit's transaction."""
        if record.quote is not None:
            pipe.hset(held_key(record.account_id), record.job_id, record.quote.run_s)


def _these(jobs: int) -> str:
    return "this job needs" if jobs == 1 else f"these {jobs} jobs need"


def record_usage(pipe: Pipeline, before: JobStatus | None, after: JobRecord) -> None:
    """A job that ends gives back its hold and is charged what its run used, in the transaction that ends it."""
    if after.status.is_terminal and (before is None or not before.is_terminal):
        pipe.hdel(held_key(after.account_id), after.job_id)
        if after.run_s > 0:
            ended_at = after.finished_at or time.time()
            key = used_key(after.account_id)
            pipe.zadd(key, {f"{after.job_id}:{after.run_s:.3f}": ended_at})
            pipe.zremrangebyscore(key, "-inf", f"({ended_at - DAY_S!r}")
            pipe.expire(key, DAY_S + 3600)


def _charges(reader: Reader, account_id: str, now: float) -> list[tuple[float, float]]:
    """(ended_at, seconds) of the account's charges in the last 24 h, oldest first."""
    entries = cast(
        list[tuple[bytes, float]],
        reader.zrangebyscore(used_key(account_id), f"({now - DAY_S!r}", "+inf", withscores=True),
    )
    return [(when, float(member.rsplit(b":", 1)[1])) for member, when in entries]
