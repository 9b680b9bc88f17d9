"""The web process: FastAPI with the REST routes and the Gradio page mounted beside them (no torch)."""

from __future__ import annotations

import gc
import logging
import os

import gradio as gr
import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from gradio.route_utils import API_PREFIX  # where Gradio mounts its routes under the page: /gradio_api
from starlette.middleware.trustedhost import TrustedHostMiddleware

from mochi_app.api import build_router, install_error_handlers
from mochi_app.api_docs import add_api_docs
from mochi_app.callers import is_loopback
from mochi_app.config import Settings
from mochi_app.connections import queue_url, redis_client
from mochi_app.event_stream import events_client
from mochi_app.guests import NewGuestLimit
from mochi_app.http_server import read_deadline_protocol
from mochi_app.maintenance import start_maintenance, start_snapshots
from mochi_app.middleware import BodySizeLimit, GuestCookie, NoUploads, SameSiteWrites
from mochi_app.openai_api import build_openai_router
from mochi_app.page_assets import CSS
from mochi_app.sessions import SessionsPerCaller
from mochi_app.storage import StorageUnusable
from mochi_app.studio import Studio
from mochi_app.ui import TITLE, build_ui

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 5.0
SHUTDOWN_GRACE_S = 5
# Gradio rebuilds the API page's per-endpoint figures (a pandas DataFrame of its last 10,000 events) after
# every event, in a thread that holds the GIL: at 200 polls a second that is most of a core. Every 100th
# event over the last 1,000 keeps the figures; an operator's own values win. Read when the queue is built.
# What a browser sends as Host for a loopback address (any port): a page on a rebinding domain sends its own.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
GRADIO_ANALYTICS = {"GRADIO_ANALYTICS_MAX_EVENTS": "1000", "GRADIO_ANALYTICS_CACHE_FREQUENCY": "100"}


def create_app(settings: Settings) -> FastAPI:
    """The whole web surface; it starts without Redis and answers 503 until Redis answers."""
    url = queue_url(settings)
    redis = redis_client(url, timeout_s=REDIS_TIMEOUT_S)
    studio = Studio(redis, settings)
    app = FastAPI(
        title=TITLE,
        description="Text to video with Genmo's Mochi 1: submit a prompt, poll its status, download the MP4.",
        docs_url=None,  # add_api_docs serves /docs with its scripts from here
        redoc_url=None,
    )
    app.state.studio = studio
    install_error_handlers(app)
    app.add_middleware(SessionsPerCaller, prefix=API_PREFIX, identify=studio.callers.signed_in_as)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(NoUploads, prefix=API_PREFIX)
    app.add_middleware(SameSiteWrites, allowed_origins=settings.cors_origins)
    # Our CORS policy, on the parent app, is the only one: Gradio then adds no CORS headers of its own (it
    # reflected any Origin, with credentials, wherever the host was not a localhost name).
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_credentials=True,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["authorization", "content-type"],
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(settings), www_redirect=False)
    if studio.callers.guest_tokens:
        limit = NewGuestLimit(redis, settings.new_guests_per_hour)
        app.add_middleware(GuestCookie, tokens=studio.callers.guest_tokens, limit=limit, embedded=settings.embedded)
    app.include_router(build_router(studio, events_client(url)))
    app.include_router(build_openai_router(studio))
    add_api_docs(app)
    for name, value in GRADIO_ANALYTICS.items():
        os.environ.setdefault(name, value)
    # Whatever Gradio caches stays in the data folder (not a shared /tmp/gradio), an operator's choice first.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(settings.data_dir / "gradio-tmp"))
    # Mounted last: the REST routes above match first; the page takes everything else.
    gr.mount_gradio_app(app, build_ui(studio), path="/", css=CSS, footer_links=["api"], ssr_mode=False)
    return app


def allowed_hosts(settings: Settings) -> list[str]:
    """Host headers the web answers (others get 400): on a loopback bind the loopback names and
    MOCHI_ALLOWED_HOSTS, so a rebinding domain cannot reach the local owner's studio; elsewhere
    MOCHI_ALLOWED_HOSTS, or any host when it is empty."""
    if is_loopback(settings.host):
        return [*LOOPBACK_HOSTS, *settings.allowed_hosts]
    return list(settings.allowed_hosts) or ["*"]


def serve(settings: Settings) -> None:
    """Run the web process in the foreground until SIGINT or SIGTERM; NobodyCanSignIn stops it first."""
    app = create_app(settings)
    studio: Studio = app.state.studio
    studio.callers.ensure_someone_can_sign_in()
    try:
        studio.videos.check()
    except StorageUnusable as exc:  # the page and the queue still work; downloads wait for the store
        log.warning("%s", exc)
    start_maintenance(studio.queue, studio.videos)
    start_snapshots(studio.queue)
    # Everything built so far (Gradio, FastAPI, the page) lives as long as the process: move it out of the
    # collector's sight, or every full collection walks it and stalls the event loop for 100+ ms.
    gc.collect()
    gc.freeze()
    shown_host = "127.0.0.1" if settings.host in {"0.0.0.0", "::"} else settings.host
    log.info("studio page at http://%s:%d  (REST docs at /docs)", shown_host, settings.port)
    # An open page keeps a stream open; without a limit, stopping would wait for every tab to close.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        http=read_deadline_protocol(settings.request_timeout_s),
        limit_concurrency=settings.max_connections,  # past it, new requests get 503 at once
    )
