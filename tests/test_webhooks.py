"""Webhooks: signed with each account's secret (verified with the `standardwebhooks` package), delivered at
least once through refusals, a receiver that is down and a queue server killed, and never to private addresses."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client
from redis import Redis
from standardwebhooks import Webhook as Verifier

from mochi_app.config import Settings
from mochi_app.queue import JobQueue
from mochi_app.redis_server import EmbeddedServer
from mochi_app.runner import JobRunner
from mochi_app.schemas import InvalidRequest
from mochi_app.storage import open_storage
from mochi_app.webhook_delivery import Deliverer, post
from mochi_app.webhooks import OUTBOX_KEY, WebhookSecrets, subscription
from tests.harness import SMALL, Children, free_port, new_account, wait_for
from tests.test_storage import StillRenderer

PARAMS = {"prompt": "a swallow dives", **SMALL}
TERMINAL = {"job.completed", "job.failed", "job.cancelled"}


class Receiver:
    """A loopback webhook receiver that verifies every delivery as the spec says, and can refuse or be down."""

    def __init__(self, secret: str, refuse_first: int = 0, port: int | None = None) -> None:
        self.verifier, self.refuse_left = Verifier(secret), refuse_first
        self.accepted: Counter[str] = Counter()  # webhook-id -> deliveries answered 2xx
        self.bodies: dict[str, dict[str, Any]] = {}
        self.connections = 0
        self.changed = threading.Condition()
        self.port = port or free_port()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                with receiver.changed:
                    receiver.connections += 1
                    receiver.verifier.verify(body, dict(self.headers))  # raises on a bad signature
                    if receiver.refuse_left > 0:
                        receiver.refuse_left -= 1
                        self.send_response(503)
                    else:
                        receiver.accepted[self.headers["webhook-id"]] += 1
                        receiver.bodies[self.headers["webhook-id"]] = json.loads(body)
                        self.send_response(204)
                    self.end_headers()
                    receiver.changed.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def types(self) -> list[str]:
        return sorted(body["type"] for body in self.bodies.values())

    def wait_for_types(self, wanted: set[str], timeout_s: float = 120) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: wanted <= set(self.types()), timeout_s), self.types()


class Delivering:
    """A Deliverer's loop in a thread, as every web and worker process runs it."""

    def __init__(self, redis: Redis) -> None:
        self.deliverer = Deliverer(redis, allow_private=True)  # the receiver is on loopback
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.deliverer.run_once(block_ms=200)

    def __enter__(self) -> Delivering:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def hooked(settings: Settings, redis: Redis) -> Iterator[tuple[Settings, str, str]]:
    """Settings allowing a loopback receiver, an account, and its webhook secret."""
    account = new_account()
    secret = WebhookSecrets(redis).ensure(account).current
    yield replace(settings, webhook_allow_private=True), account, secret
    redis.hdel("webhook-secrets", account)


def render(settings: Settings, redis: Redis, account: str, url: str, **extra: Any) -> str:
    queue = JobQueue(redis, settings)
    job = queue.submit(account, {**PARAMS, "webhook_url": url, **extra})
    queue.rq.remove(job.job_id)
    JobRunner(queue, StillRenderer(), settings, open_storage(settings), worker_id="w").run(job.job_id)
    return job.job_id


def test_a_subscription_is_checked_at_submit() -> None:
    assert subscription({}, False) is None
    hook = subscription({"webhook_url": "https://hooks.example/x", "webhook_events": ["job.completed"]}, False)
    assert hook is not None and hook.events == ["job.completed"]
    refusals = {
        "ftp://hooks.example/x": "http or https",
        "https://user:pw@hooks.example/x": "http or https",
        "http://127.0.0.1:8080/x": "loopback",
        "http://10.1.2.3/x": "private",
        "http://169.254.169.254/latest/meta-data/": "link-local",
        "http://[::1]/x": "loopback",
        "http://[::ffff:127.0.0.1]/x": "loopback",
        "http://localhost/x": "localhost",
        "http://0.0.0.0/x": "private",
    }
    for url, why in refusals.items():
        with pytest.raises(InvalidRequest, match=why):
            subscription({"webhook_url": url}, allow_private=False)
    assert subscription({"webhook_url": "http://127.0.0.1:8080/x"}, allow_private=True) is not None
    for events in (["job.progress"], [], "job.completed"):
        with pytest.raises(InvalidRequest, match="webhook_events"):
            subscription({"webhook_url": "https://hooks.example/x", "webhook_events": events}, False)


def test_an_account_without_a_secret_cannot_ask_for_webhooks(settings: Settings, redis: Redis) -> None:
    with pytest.raises(InvalidRequest, match="no webhook secret"):
        JobQueue(redis, settings).submit(new_account(), {**PARAMS, "webhook_url": "https://hooks.example/x"})


def test_nothing_is_posted_to_a_private_address_however_the_name_resolves() -> None:
    receiver = Receiver("whsec_" + "A" * 32).start()
    try:

        def rebinding(host: str, port: int, **_: Any) -> list[Any]:  # a public-looking name, a loopback answer
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

        headers = {"webhook-id": "msg_1"}
        for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost"), "http://169.254.169.254/x",
                    "http://10.0.0.1/x", f"http://[::1]:{receiver.port}/x"):  # fmt: skip
            outcome = post(url, headers, "{}", allow_private=False)
            assert outcome.final and outcome.error and outcome.error.startswith("refused"), url
        sneaky = post(f"http://hooks.example:{receiver.port}/x", headers, "{}", allow_private=False, resolve=rebinding)
        assert sneaky.final and sneaky.error is not None and "resolves to a loopback address" in sneaky.error
        assert receiver.connections == 0
    finally:
        receiver.stop()


def test_a_refused_first_attempt_is_retried_and_each_event_arrives_once(
    hooked: tuple[Settings, str, str], redis: Redis
) -> None:
    settings, account, secret = hooked
    receiver = Receiver(secret, refuse_first=1).start()
    try:
        with Delivering(redis):
            job_id = render(settings, redis, account, receiver.url)
            receiver.wait_for_types({"job.running", "job.completed"})
        assert set(receiver.accepted.values()) == {1}  # no duplicate by webhook-id
        completed = next(body for body in receiver.bodies.values() if body["type"] == "job.completed")
        assert completed["data"]["job_id"] == job_id and completed["data"]["status"] == "COMPLETED"
        assert completed["data"]["download_url"] == f"/download/{job_id}"
        record = JobQueue(redis, settings).store.get(job_id)
        assert record is not None and record.webhook is not None
        codes = [attempt.status_code for attempt in record.webhook.attempts]
        assert codes.count(503) == 1 and codes.count(204) == 2  # the refusal, then both events delivered
    finally:
        receiver.stop()


def test_a_rotated_secret_signs_with_both_during_the_grace(redis: Redis) -> None:
    account, secrets = new_account(), WebhookSecrets(redis)
    first = secrets.ensure(account)
    assert secrets.ensure(account) == first  # made once
    rotated = secrets.ensure(account, rotate=True)
    assert rotated.current != first.current and rotated.signing() == [rotated.current, first.current]
    assert rotated.rotated_at is not None
    assert rotated.signing(now=rotated.rotated_at + 25 * 3600) == [rotated.current]
    redis.hdel("webhook-secrets", account)


@pytest.mark.slow
def test_deliveries_wait_out_a_receiver_that_is_down(hooked: tuple[Settings, str, str], redis: Redis) -> None:
    settings, account, secret = hooked
    receiver = Receiver(secret)  # not started: connections are refused
    with Delivering(redis):
        job_id = render(settings, redis, account, receiver.url, webhook_events=["job.completed"])
        store = JobQueue(redis, settings).store
        wait_for(lambda: (r := store.get(job_id)) and r.webhook and r.webhook.attempts, 60, "a first attempt")
        receiver.start()
        try:
            receiver.wait_for_types({"job.completed"}, timeout_s=120)  # at a retry, 5 s in or later
        finally:
            receiver.stop()
    assert list(receiver.accepted.values()) == [1]
    record = store.get(job_id)
    assert record is not None and record.webhook is not None
    assert record.webhook.attempts[0].error is not None and record.webhook.attempts[-1].status_code == 204


@pytest.mark.slow
def test_a_delivery_outlives_a_queue_server_killed_before_it_was_sent(
    hooked: tuple[Settings, str, str], tmp_path: Path, children: Children
) -> None:
    """The outbox entry is written with the status change, in the append-only file, so a SIGKILL between the
    change and the delivery loses nothing: after the restart the event is delivered once."""
    settings, account, _ = hooked
    server = EmbeddedServer(tmp_path / "server")
    own = replace(settings, redis_url=server.start())
    with Redis.from_url(own.redis_url or "") as first:
        secret = WebhookSecrets(first).ensure(account).current
        receiver = Receiver(secret)  # not listening yet: no process delivers before the kill anyway
        job_id = render(own, first, account, receiver.url, webhook_events=["job.completed"])
        assert first.xlen(OUTBOX_KEY) == 1  # written with the COMPLETED record, not yet sent
    assert server.process is not None
    server.process.kill()  # SIGKILL: no shutdown, nothing saved but what the append-only file holds
    server.process.wait()
    restarted = EmbeddedServer(tmp_path / "server")
    children.defer(restarted.stop)
    with Redis.from_url(restarted.start()) as again:
        receiver.start()
        try:
            with Delivering(again):
                receiver.wait_for_types({"job.completed"})
        finally:
            receiver.stop()
    assert list(receiver.accepted.values()) == [1]
    [body] = receiver.bodies.values()
    assert body["data"]["job_id"] == job_id


@pytest.mark.slow
def test_gradio_clients_submit_takes_a_webhook_too(
    module_settings: Settings, redis: Redis, children: Children, tmp_path: Path
) -> None:
    """A web and a worker as deployed: the web's (and the worker's) delivery loop posts the events."""
    settings = replace(module_settings, webhook_allow_private=True)
    _, url = children.web(settings, tmp_path / "web.log")
    children.worker(settings, tmp_path / "worker.log")
    secret = WebhookSecrets(redis).ensure("local").current  # the loopback owner's, as gradio_client is here
    receiver = Receiver(secret).start()
    children.defer(receiver.stop)
    job = Client(url, verbose=False).predict(
        "a swallow dives", num_frames=31, height=96, width=160, num_inference_steps=4,
        webhook_url=receiver.url, webhook_events=["job.completed"], api_name="/submit",
    )  # fmt: skip
    receiver.wait_for_types({"job.completed"})
    [body] = receiver.bodies.values()
    assert body["data"]["job_id"] == job["job_id"] and list(receiver.accepted.values()) == [1]
