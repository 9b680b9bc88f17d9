"""Webhooks' durable half: each account's signing secret, a job's subscription, and the outbox written with
each status change it reports (delivery is webhook_delivery.py)."""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from redis import Redis
from redis.client import Pipeline

from mochi_app.records import WEBHOOK_EVENTS, JobRecord, Webhook
from mochi_app.schemas import InvalidRequest

SECRETS_KEY = "webhook-secrets"  # hash: account id -> AccountSecrets JSON
OUTBOX_KEY = "webhooks:outbox"  # stream: deliveries due now, read by a consumer group
RETRY_KEY = "webhooks:retry"  # sorted set: Delivery JSON by the time its next attempt is due
GROUP = "deliverers"
ROTATION_GRACE_S = 24 * 3600  # after a rotation, deliveries carry the old secret's signature too this long
MAX_URL_LENGTH = 2048
SECRET_PREFIX = "whsec_"


class AccountSecrets(BaseModel):
    current: str
    previous: str | None = None
    rotated_at: float | None = None

    def signing(self, now: float | None = None) -> list[str]:
        """The secrets a delivery is signed with now: the current one, and the previous during the grace."""
        moment = time.time() if now is None else now
        recent = self.previous and self.rotated_at is not None and moment - self.rotated_at < ROTATION_GRACE_S
        return [self.current, *([self.previous] if recent and self.previous else [])]


class WebhookSecrets:
    """Each account's `whsec_…` secret, made on first use, rotated on request."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def get(self, account_id: str) -> AccountSecrets | None:
        raw = self.redis.hget(SECRETS_KEY, account_id)
        return None if raw is None else AccountSecrets.model_validate_json(raw)

    def ensure(self, account_id: str, rotate: bool = False) -> AccountSecrets:
        """The account's secrets, made if it has none; `rotate` makes a new current one (the old one still
        signs for ROTATION_GRACE_S, so receivers can switch over)."""
        found = self.get(account_id)
        if found is not None and not rotate:
            return found
        fresh = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()
        made = AccountSecrets(
            current=fresh,
            previous=found.current if found is not None else None,
            rotated_at=time.time() if found is not None else None,
        )
        self.redis.hset(SECRETS_KEY, account_id, made.model_dump_json())
        return made


def subscription(params: Mapping[str, Any], allow_private: bool) -> Webhook | None:
    """`webhook_url` and `webhook_events` from a submit's parameters (checked; InvalidRequest otherwise)."""
    url, events = params.get("webhook_url"), params.get("webhook_events")
    if url is None:
        if events is not None:
            raise InvalidRequest({"webhook_events": "webhook_events needs a webhook_url"})
        return None
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        raise InvalidRequest({"webhook_url": f"webhook_url must be a URL of at most {MAX_URL_LENGTH} characters"})
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.username or parts.password:
        raise InvalidRequest({"webhook_url": f"webhook_url must be an http or https URL with a host, got {url!r}"})
    if not allow_private and (reason := private_reason(parts.hostname)):
        raise InvalidRequest({"webhook_url": f"webhook_url points at {reason}; webhooks go to public addresses only"})
    chosen = list(WEBHOOK_EVENTS) if events is None else events
    if not isinstance(chosen, list) or not chosen or any(event not in WEBHOOK_EVENTS for event in chosen):
        raise InvalidRequest({"webhook_events": f"webhook_events must be a list of {', '.join(WEBHOOK_EVENTS)}"})
    return Webhook(url=url, events=sorted(set(chosen), key=WEBHOOK_EVENTS.index))


def private_reason(host: str) -> str | None:
    """Why `host` (a name or an address) must not be posted to, or None for a public address. A name is
    checked here only as written (`localhost`); what it resolves to is checked as the delivery connects."""
    if host.rstrip(".").lower() in {"localhost", "localhost.localdomain"} or host.lower().endswith(".localhost"):
        return "this machine (localhost)"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None  # a name: resolved and checked at delivery
    return address_reason(address)


def address_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address.is_loopback:
        return f"a loopback address ({address})"
    if address.is_link_local:
        return f"a link-local address ({address}), where cloud metadata services live"
    if address.is_private or address.is_reserved or address.is_unspecified or address.is_multicast:
        return f"a private or reserved address ({address})"
    if not address.is_global:
        return f"an address that is not public ({address})"
    return None


class Delivery(BaseModel):
    """One event to post: its stable `webhook-id`, the job as it was, and how many attempts came before."""

    webhook_id: str
    job_id: str
    account_id: str
    type: str
    timestamp: float
    record: str  # the JobRecord JSON at the change
    attempt: int = 0


def record_webhook(pipe: Pipeline, before: JobRecord | None, after: JobRecord) -> None:
    """Put the event this status change makes in the outbox, inside the transaction that writes `after`."""
    if after.webhook is None or (before is not None and before.status is after.status) or before is None:
        return
    kind = f"job.{after.status.lower()}"
    if kind not in after.webhook.events:
        return
    delivery = Delivery(
        webhook_id=f"msg_{uuid.uuid4().hex}",
        job_id=after.job_id,
        account_id=after.account_id,
        type=kind,
        timestamp=time.time(),
        record=after.model_dump_json(),
    )
    pipe.xadd(OUTBOX_KEY, {"delivery": delivery.model_dump_json()})


def payload(delivery: Delivery, data: dict[str, Any]) -> str:
    """The body Standard Webhooks describes: type, timestamp and the job as /status shows it."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(delivery.timestamp))
    return json.dumps({"type": delivery.type, "timestamp": when, "data": data}, separators=(",", ":"))
