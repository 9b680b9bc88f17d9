"""Webhooks' delivery: the outbox drained by every web and worker process, signed posts to public addresses
only, retries with backoff for a day, and each attempt written to the job's record."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from redis import Redis
from redis.exceptions import ResponseError
from standardwebhooks.webhooks import Webhook as Signer

from mochi_app.public import JobPublic
from mochi_app.records import JobRecord, JobStatus, WebhookAttempt
from mochi_app.store import JobStore
from mochi_app.webhooks import (
    GROUP,
    OUTBOX_KEY,
    RETRY_KEY,
    Delivery,
    WebhookSecrets,
    address_reason,
    payload,
    private_reason,
)

log = logging.getLogger(__name__)

# Seconds before each retry: the first within about 5 s, then minutes, then hours, about a day in all.
RETRY_AFTER_S = (5, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600, 6 * 3600, 6 * 3600)
TIMEOUT_S = 5.0
CLAIM_IDLE_MS = 60_000  # a delivery read by a process that died is taken over after this long
BATCH = 20
MAX_ATTEMPTS_KEPT = 20  # on the record, the latest
USER_AGENT = "mochi-studio-webhooks/1"
# Moves every due retry back into the outbox, atomically: a crash between the two cannot lose one.
MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('XADD', KEYS[2], '*', 'delivery', member)
end
return #due
"""


class Refused(Exception):
    """The webhook's address may not be posted to (private, loopback, link-local); not retried."""


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None = None
    error: str | None = None
    final: bool = False  # refused for good: no retry

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


Resolve = Callable[..., list[Any]]  # socket.getaddrinfo's shape


def post(
    url: str, headers: dict[str, str], body: str, allow_private: bool, resolve: Resolve = socket.getaddrinfo
) -> Outcome:
    """POST to `url` at an address checked as connected to (so a name that resolves to a private address
    fails, however often its DNS answer changes): no redirects, a short timeout, the answer's body unread."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        address = _address(host, parts.port or (443 if parts.scheme == "https" else 80), allow_private, resolve)
    except Refused as exc:
        return Outcome(error=f"refused: {exc}", final=True)
    except OSError as exc:
        return Outcome(error=f"{host} could not be resolved ({exc})")
    shown = f"[{address}]" if ":" in address else address
    pinned = parts._replace(netloc=f"{shown}:{parts.port}" if parts.port else shown).geturl()
    request_headers = {**headers, "Host": parts.netloc.rpartition("@")[2], "User-Agent": USER_AGENT}
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    try:
        with (
            httpx.Client(timeout=TIMEOUT_S, follow_redirects=False) as client,
            client.stream("POST", pinned, headers=request_headers, content=body, extensions=extensions) as answer,
        ):
            return Outcome(status_code=answer.status_code)  # its body is never read
    except httpx.HTTPError as exc:
        return Outcome(error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _address(host: str, port: int, allow_private: bool, resolve: Resolve) -> str:
    if not allow_private and (reason := private_reason(host)):
        raise Refused(reason)
    found = resolve(host.strip("[]"), port, type=socket.SOCK_STREAM)
    addresses = [str(info[4][0]) for info in found]
    if not allow_private:
        for candidate in addresses:
            if reason := address_reason(ipaddress.ip_address(candidate.split("%")[0])):
                raise Refused(f"{host} resolves to {reason}")
    return addresses[0]


@dataclass
class Deliverer:
    """Drains the outbox: one of these runs in every web and worker process (a consumer group shares the work)."""

    redis: Redis
    allow_private: bool
    name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    def __post_init__(self) -> None:
        self.store = JobStore(self.redis)
        self.secrets = WebhookSecrets(self.redis)
        self._move_due = self.redis.register_script(MOVE_DUE)
        self._grouped = False

    def run_once(self, block_ms: int = 1000) -> int:
        """Move due retries back, take over deliveries a dead process left, post what is due; returns how many
        were posted."""
        self._ensure_group()
        self._move_due(keys=[RETRY_KEY, OUTBOX_KEY], args=[time.time(), 100])
        try:
            claimed: Any = self.redis.xautoclaim(OUTBOX_KEY, GROUP, self.name, CLAIM_IDLE_MS, count=BATCH)
            entries: list[Any] = list(claimed[1]) if claimed else []
            if not entries:
                read: Any = self.redis.xreadgroup(GROUP, self.name, {OUTBOX_KEY: ">"}, count=BATCH, block=block_ms)
                entries = list(read[0][1]) if read else []
        except ResponseError as exc:  # the server lost the group (a restore onto a new one): make it again
            if "NOGROUP" not in str(exc):
                raise
            self._grouped = False
            return 0
        for entry_id, fields in entries:
            if fields:  # a trimmed entry comes back empty
                self._deliver(Delivery.model_validate_json(fields[b"delivery"]))
            self.redis.xack(OUTBOX_KEY, GROUP, entry_id)
            self.redis.xdel(OUTBOX_KEY, entry_id)
        return len(entries)

    def _deliver(self, delivery: Delivery) -> None:
        record = JobRecord.model_validate_json(delivery.record)
        hook = record.webhook
        secrets = self.secrets.get(delivery.account_id)
        if hook is None or secrets is None:
            return
        body = payload(delivery, _public_view(record))
        moment = datetime.fromtimestamp(time.time(), tz=UTC)
        signatures = " ".join(Signer(secret).sign(delivery.webhook_id, moment, body) for secret in secrets.signing())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signatures,
        }
        outcome = post(hook.url, headers, body, self.allow_private)
        self._note(delivery, outcome)
        if not outcome.delivered and not outcome.final and delivery.attempt < len(RETRY_AFTER_S):
            again = delivery.model_copy(update={"attempt": delivery.attempt + 1})
            self.redis.zadd(RETRY_KEY, {again.model_dump_json(): time.time() + RETRY_AFTER_S[delivery.attempt]})
        elif not outcome.delivered:
            log.warning("webhook %s for job %s given up: %s", delivery.webhook_id, delivery.job_id, outcome.error)

    def _note(self, delivery: Delivery, outcome: Outcome) -> None:
        attempt = WebhookAttempt(
            at=time.time(),
            webhook_id=delivery.webhook_id,
            type=delivery.type,
            status_code=outcome.status_code,
            error=outcome.error,
        )

        def add(current: JobRecord) -> JobRecord | None:
            if current.webhook is None:
                return None
            attempts = [*current.webhook.attempts, attempt][-MAX_ATTEMPTS_KEPT:]
            return current.model_copy(update={"webhook": current.webhook.model_copy(update={"attempts": attempts})})

        self.store.update(delivery.job_id, add)

    def _ensure_group(self) -> None:
        if self._grouped:
            return
        try:
            self.redis.xgroup_create(OUTBOX_KEY, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped = True


def _public_view(record: JobRecord) -> dict[str, Any]:
    """The job as /status shows it at the change (its queue position is not known here)."""
    shown = JobPublic.of(record, None, record.status is JobStatus.COMPLETED and record.video_path is not None)
    return shown.model_dump(mode="json", exclude={"webhook"})
