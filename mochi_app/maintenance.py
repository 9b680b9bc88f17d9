"""Maintenance run in the background: recover lost jobs, end overdue ones, expire old ones, snapshot records."""

from __future__ import annotations

import threading

from mochi_app.liveness import Reaper, run_every
from mochi_app.queue import JobQueue
from mochi_app.retention import expire_finished_jobs
from mochi_app.snapshots import Snapshots, snapshot_place
from mochi_app.storage import VideoStorage
from mochi_app.webhook_delivery import Deliverer

RETENTION_CHECK_S = 600.0
DELIVERY_PAUSE_S = 0.05


def start_maintenance(queue: JobQueue, videos: VideoStorage) -> list[threading.Event]:
    """Start the chores in daemon threads; set the returned events to stop them.

    Every process runs them, so a fleet needs no separate janitor; each chore is safe to run twice.
    """
    settings = queue.settings
    stops = [
        run_every(settings.heartbeat_ttl_s / 2, Reaper(queue), "reaper"),
        run_every(settings.heartbeat_ttl_s / 2, queue.cancel_overdue, "deadlines"),
        # Waits on the outbox itself (up to a second a round), so a pause between rounds only yields.
        run_every(DELIVERY_PAUSE_S, Deliverer(queue.redis, settings.webhook_allow_private).run_once, "webhooks"),
    ]
    if settings.retention_days or settings.guest_retention_days:

        def expire() -> int:
            store = queue.store
            guests = expire_finished_jobs(store, videos, settings.guest_retention_days, guests_only=True)
            return guests + expire_finished_jobs(store, videos, settings.retention_days)

        stops.append(run_every(RETENTION_CHECK_S, expire, "retention"))
    return stops


def start_snapshots(queue: JobQueue) -> threading.Event | None:
    """The web's chore: every MOCHI_SNAPSHOT_INTERVAL_S, records and accounts beside the videos."""
    settings = queue.settings
    if not settings.snapshot_interval_s:
        return None
    snapshots = Snapshots(snapshot_place(settings))
    return run_every(settings.snapshot_interval_s, lambda: snapshots.keep(queue.redis, settings.data_dir), "snapshots")
