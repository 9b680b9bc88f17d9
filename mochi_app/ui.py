"""The Gradio Blocks page: prompt form, live job card, player, the account's gallery, and the named API events."""

# No `from __future__ import annotations` here: Gradio reads these handlers' type hints at runtime.

import functools
import logging
from collections.abc import Callable
from html import escape
from typing import Any, TypeVar

import gradio as gr
from redis.exceptions import RedisError

from mochi_app import cards
from mochi_app.accounts import NotSignedIn
from mochi_app.errors import QUEUE_UNREACHABLE, JobNotFound, refusal
from mochi_app.schemas import MIN_NUM_FRAMES, MIN_NUM_INFERENCE_STEPS, GenerationRequest, InvalidRequest, JobPublic
from mochi_app.studio import Studio

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

GALLERY_PAGE_SIZE = 6
POLL_INTERVAL_S = 1.0
DEFAULTS = {name: field.default for name, field in GenerationRequest.model_fields.items()}
# name: (num_inference_steps, num_frames), clamped to the configured limits.
PRESETS = {"Draft": (24, 31), "Standard": (64, 85), "Final": (100, 163)}
# Handlers the page calls on its own: hidden from the API page, never queued behind Generate or each other.
INTERNAL: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None, "show_progress": "hidden"}

# The key goes to POST /session, which keeps it in an HttpOnly cookie; the page's scripts never store it.
SIGN_IN_JS = """async (key) => {
  const response = await fetch("session", {method: "POST", headers: {"Content-Type": "application/json"},
                                           body: JSON.stringify({api_key: key})});
  if (response.ok) { window.location.reload(); return ""; }
  return "**" + (await response.json()).detail + "**";
}"""
SIGN_OUT_JS = """async () => { await fetch("session", {method: "DELETE"}); window.location.reload(); }"""

CSS = """
.banner { padding: 8px 12px; border-radius: 8px; background: var(--block-background-fill); }
.banner.warn { background: #fff4e5; color: #7a4100; }
.banner.error { background: #fee2e2; color: #991b1b; }
.banner.starting { display: flex; flex-direction: column; gap: 4px; background: #eff6ff; color: #1e3a8a; }
.banner progress { width: 100%; height: 10px; }
.job-card { display: flex; flex-direction: column; gap: 6px; padding: 12px; border-radius: 8px;
  border: 1px solid var(--border-color-primary); min-height: 72px; }
.job-card.empty { color: var(--body-text-color-subdued); justify-content: center; }
.job-card progress { width: 100%; height: 12px; }
.badge { font-size: 12px; font-weight: 600; padding: 2px 8px; border-radius: 999px; background: #e5e7eb; color: #111; }
.badge.pending { background: #e0e7ff; color: #3730a3; } .badge.running { background: #dbeafe; color: #1e40af; }
.badge.completed { background: #dcfce7; color: #166534; } .badge.failed { background: #fee2e2; color: #991b1b; }
.badge.cancelled { background: #f3f4f6; color: #4b5563; }
.meta { font-size: 13px; color: var(--body-text-color-subdued); } .error { color: #b91c1c; }
.player { width: 100%; max-height: 60vh; border-radius: 8px; background: #000; }
.download { display: inline-block; margin-top: 6px; }
.gallery-grid { flex-wrap: wrap !important; gap: 12px; }
.gallery-item { min-width: 260px !important; max-width: 32%; border: 1px solid var(--border-color-primary);
  border-radius: 8px; padding: 8px; }
.thumb { width: 100%; aspect-ratio: 16 / 9; border-radius: 6px; background: #111; object-fit: contain; }
.thumb.placeholder { display: flex; align-items: center; justify-content: center; background: #f3f4f6; }
.caption .prompt { font-weight: 500; margin: 4px 0; }
"""


def _user_errors(fn: F) -> F:
    """Turn our errors into the messages errors.ERRORS gives them (gr.Error), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            answer = refusal(exc)
            if answer is None:
                raise
            if isinstance(exc, RedisError):
                log.warning("queue unreachable", exc_info=True)
            raise gr.Error(answer.detail, print_exception=False) from None

    return wrapper  # type: ignore[return-value]


def account_of(studio: Studio, request: gr.Request) -> str:
    """Who a Gradio event acts for: the same decision as every other door (accounts.Callers)."""
    return studio.callers.account_for(request.headers)


def address_of(request: gr.Request) -> str | None:
    """The client's address, as the per-address limits count it."""
    client = request.client
    return client.host if client is not None else None


def build_ui(studio: Studio) -> gr.Blocks:
    """The studio page; every handler acts for the visitor's own account only."""
    page: gr.Blocks
    with gr.Blocks(title="Mochi studio", analytics_enabled=False) as page:
        StudioPage(studio, page)
        add_api(studio)
    return page


class StudioPage:
    """Builds the page's components inside a Blocks context, then wires their events."""

    def __init__(self, studio: Studio, blocks: gr.Blocks) -> None:
        self.studio = studio
        self.limits = studio.settings.limits
        self.followed = gr.State(None)  # the job id the card and player follow
        self.last_seed = gr.State(None)
        self.cursors = gr.State([None])  # one cursor per gallery page visited; the last is the page shown
        self.next_cursor = gr.State(None)
        # The shown page's jobs and whose they are; the gallery re-renders when it changes.
        self.gallery = gr.State(None)
        self.timer = gr.Timer(POLL_INTERVAL_S, active=False)
        gr.Markdown("# Mochi studio\nText to video with Genmo's Mochi 1.")
        self.banner = gr.HTML(cards.model_banner(None))
        self._sign_in()
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                self._form()
            with gr.Column(scale=6):
                self.job_card = gr.HTML(cards.status_card(None))
                self.video = gr.HTML("")
                self.cancel_followed = gr.Button("Cancel this job", size="sm", variant="stop", visible=False)
        gr.Markdown("## Your videos")
        with gr.Row():
            self.newer = gr.Button("← Newer", size="sm", interactive=False)
            self.older = gr.Button("Older →", size="sm", interactive=False)
        self.shown = [
            *(self.banner, self.job_card, self.video, self.cancel_followed, self.gallery, self.next_cursor),
            *(self.timer, self.newer, self.older),
        ]
        blocks.load(self.who_is_it, None, self.who, **INTERNAL)
        blocks.load(self.refresh, [self.followed, self.cursors], self.shown, **INTERNAL)
        self.timer.tick(self.refresh, [self.followed, self.cursors], self.shown, **INTERNAL)
        self._wire_form()
        self._wire_jobs()
        gr.render(inputs=self.gallery)(self._gallery)

    def _sign_in(self) -> None:
        """Who the visitor is, and a key box; the cookie is set by POST /session, then the page reloads."""
        self.who = gr.Markdown("")
        if self.studio.callers.hugging_face:
            gr.LoginButton("Sign in with Hugging Face")  # Gradio's OAuth routes; Callers reads the cookie they set
        with gr.Accordion("Sign in with an API key", open=False):
            with gr.Row():
                key = gr.Textbox(label="API key", type="password", placeholder="mochi_...", scale=4)
                sign_in = gr.Button("Sign in", scale=1)
                sign_out = gr.Button("Sign out", scale=1)
            message = gr.Markdown("")
        sign_in.click(None, key, message, js=SIGN_IN_JS, api_visibility="private")
        sign_out.click(None, None, None, js=SIGN_OUT_JS, api_visibility="private")

    def who_is_it(self, request: gr.Request) -> str:
        return cards.who_label(self.studio.callers.signed_in_as(request.headers))

    def _form(self) -> None:
        limits = self.limits
        max_frames = MIN_NUM_FRAMES + (limits.max_num_frames - MIN_NUM_FRAMES) // 6 * 6
        self.prompt = gr.Textbox(label="Prompt", lines=3, placeholder="A red fox trots through fresh snow at dawn")
        self.prompt_tokens = gr.Markdown(cards.tokens_label(None, limits.max_prompt_tokens))
        self.negative = gr.Textbox(label="Negative prompt", lines=1, placeholder="What the video should not show")
        self.negative_tokens = gr.Markdown("")
        self.preset = gr.Radio(list(PRESETS), value="Standard", label="Quality preset")
        with gr.Accordion("Advanced", open=False):
            self.num_frames = gr.Slider(
                MIN_NUM_FRAMES, max_frames, value=DEFAULTS["num_frames"], step=6, precision=0, label="Frames"
            )
            self.duration = gr.Markdown(cards.frames_label(DEFAULTS["num_frames"], DEFAULTS["fps"]))
            with gr.Row():
                self.width = gr.Slider(
                    limits.min_side_px, limits.max_width_px, value=DEFAULTS["width"], step=16, precision=0,
                    label="Width (px)",
                )  # fmt: skip
                self.height = gr.Slider(
                    limits.min_side_px, limits.max_height_px, value=DEFAULTS["height"], step=16, precision=0,
                    label="Height (px)",
                )  # fmt: skip
            self.steps = gr.Slider(
                MIN_NUM_INFERENCE_STEPS, limits.max_num_inference_steps, value=DEFAULTS["num_inference_steps"],
                step=1, precision=0, label="Denoising steps",
            )  # fmt: skip
            self.guidance = gr.Slider(0, 20, value=DEFAULTS["guidance_scale"], step=0.1, label="Guidance scale")
            with gr.Row():
                self.random_seed = gr.Checkbox(value=True, label="Random seed")
                self.seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                self.reuse_seed = gr.Button("Reuse last seed", size="sm")
            self.fps = gr.Slider(1, limits.max_fps, value=DEFAULTS["fps"], step=1, precision=0, label="Frames/s")
        self.generate = gr.Button("Generate", variant="primary")
        self.inputs = [
            *(self.prompt, self.negative, self.num_frames, self.width, self.height, self.steps, self.guidance),
            *(self.random_seed, self.seed, self.fps),
        ]

    def account(self, request: gr.Request) -> str:
        return account_of(self.studio, request)

    def then_refresh(self, event: Any) -> None:
        event.then(self.refresh, [self.followed, self.cursors], self.shown, **INTERNAL)

    def refresh(self, job_id: str | None, pages: list[str | None], request: gr.Request) -> tuple[Any, ...]:
        """Everything that changes while jobs run: banner, job card, player, gallery page, timer."""
        try:
            account = self.account(request)
            job = self.studio.status(account, job_id) if job_id else None
            page_of_jobs = self.studio.jobs(account, GALLERY_PAGE_SIZE, pages[-1])
            card, workers = self.studio.model(), self.studio.workers()
        except JobNotFound:  # the followed job was deleted meanwhile
            return self.refresh(None, pages, request)
        except NotSignedIn as exc:
            return self._only_the_card(f'<div class="job-card">{escape(cards.sentence(str(exc)))}</div>')
        except RedisError:
            return self._only_the_card(
                f'<div class="job-card"><span class="error">{cards.sentence(QUEUE_UNREACHABLE)}</span> Retrying…</div>'
            )
        # The timer runs only while something of this visitor's can still change, a worker is starting, or none
        # has ever been ready (a page opened before the first worker registers must see it arrive).
        busy = any(not item.status.is_terminal for item in [*page_of_jobs.jobs, *([job] if job else [])])
        busy = busy or card is None or any(worker.stage.is_starting for worker in workers)
        return (
            cards.model_banner(card, workers),
            cards.status_card(job),
            cards.player(job),
            gr.Button(visible=job is not None and not job.status.is_terminal),
            {"account": account, "jobs": [item.model_dump(mode="json") for item in page_of_jobs.jobs]},
            page_of_jobs.next_cursor,
            gr.Timer(active=busy),
            gr.Button(interactive=len(pages) > 1),
            gr.Button(interactive=page_of_jobs.next_cursor is not None),
        )

    def _only_the_card(self, html: str) -> tuple[Any, ...]:
        return tuple(html if output is self.job_card else gr.skip() for output in self.shown)

    def _wire_form(self) -> None:
        self.prompt.change(self.count_tokens, self.prompt, self.prompt_tokens, trigger_mode="always_last", **INTERNAL)
        self.negative.change(
            self.count_tokens, self.negative, self.negative_tokens, trigger_mode="always_last", **INTERNAL
        )
        for slider in (self.num_frames, self.fps):
            slider.change(cards.frames_label, [self.num_frames, self.fps], self.duration, **INTERNAL)
        self.preset.change(self.apply_preset, self.preset, [self.steps, self.num_frames], **INTERNAL)
        self.reuse_seed.click(self.reuse, self.last_seed, [self.random_seed, self.seed], **INTERNAL)
        self.then_refresh(
            self.generate.click(
                self.submit_form,
                self.inputs,
                [self.followed, self.last_seed, self.seed, self.cursors],
                api_visibility="private",
                concurrency_limit=None,
            )
        )

    def count_tokens(self, text: str) -> str:
        limit = self.limits.max_prompt_tokens
        if not text.strip():
            return cards.tokens_label(0, limit)
        try:
            return cards.tokens_label(self.studio.models.count_tokens(text.strip()), limit)
        except RedisError:
            return cards.tokens_label(None, limit)

    def apply_preset(self, name: str) -> tuple[int, int]:
        steps, frames = PRESETS[name]
        return min(steps, self.limits.max_num_inference_steps), min(frames, self.limits.max_num_frames)

    @staticmethod
    def reuse(used: int | None) -> tuple[Any, Any]:
        return (False, used) if used is not None else (gr.skip(), gr.skip())

    @_user_errors
    def submit_form(  # noqa: PLR0917 - Gradio passes the form's components positionally
        self,
        prompt: str,
        negative_prompt: str,
        num_frames: int,
        width: int,
        height: int,
        num_inference_steps: int,
        guidance_scale: float,
        random_seed: bool,
        seed: int | None,
        fps: int,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        params = {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "num_frames": num_frames,
            "width": width,
            "height": height,
            "num_inference_steps": num_inference_steps,
            "guidance_scale": float(guidance_scale),
            "seed": None if random_seed else seed,
            "fps": fps,
        }
        job = self.studio.submit(self.account(request), params, address_of(request))
        gr.Info(f"Queued job {job.job_id[:8]} with seed {job.request.seed}.")
        return job.job_id, job.request.seed, job.request.seed, [None]

    def _wire_jobs(self) -> None:
        self.then_refresh(self.cancel_followed.click(self.cancel_job, self.followed, None, **INTERNAL))
        self.then_refresh(self.older.click(self.go_older, [self.cursors, self.next_cursor], self.cursors, **INTERNAL))
        self.then_refresh(self.newer.click(self.go_newer, self.cursors, self.cursors, **INTERNAL))

    @staticmethod
    def go_older(pages: list[str | None], cursor: str | None) -> list[str | None]:
        return [*pages, cursor] if cursor is not None else pages

    @staticmethod
    def go_newer(pages: list[str | None]) -> list[str | None]:
        return pages[:-1] or [None]

    def _gallery(self, shown: dict[str, Any] | None, request: gr.Request) -> None:
        """The gallery tiles, only for the account whose jobs they are (the state is the session's, and a
        session is only as private as its hash)."""
        try:
            owner = self.studio.callers.signed_in_as(request.headers)
        except RedisError:
            owner = None
        items = shown["jobs"] if shown is not None and owner is not None and shown["account"] == owner else []
        if not items:
            gr.Markdown("Nothing here yet: your videos appear here as you make them.")
            return
        with gr.Row(elem_classes="gallery-grid"):
            for item in items:
                self._gallery_item(JobPublic.model_validate(item))

    def _gallery_item(self, job: JobPublic) -> None:
        """One tile: the video or its state, a caption, and open / remix / cancel or delete."""
        with gr.Column(elem_classes="gallery-item", min_width=260):
            gr.HTML(cards.gallery_media(job))
            gr.HTML(cards.gallery_caption(job))
            with gr.Row():
                open_button = gr.Button("Open", size="sm")
                remix_button = gr.Button("Remix", size="sm")
                end_button = gr.Button("Delete" if job.status.is_terminal else "Cancel", size="sm", variant="stop")
            item = gr.State(job.job_id)
        self.then_refresh(open_button.click(lambda job_id: job_id, item, self.followed, **INTERNAL))
        remix_button.click(self.remix, item, self.inputs, **INTERNAL)
        if job.status.is_terminal:
            self.then_refresh(end_button.click(self.delete, [item, self.followed], self.followed, **INTERNAL))
        else:
            self.then_refresh(end_button.click(self.cancel_job, item, None, **INTERNAL))

    @_user_errors
    def cancel_job(self, job_id: str | None, request: gr.Request) -> None:
        if job_id:
            self.studio.cancel(self.account(request), job_id)

    @_user_errors
    def remix(self, job_id: str, request: gr.Request) -> tuple[Any, ...]:
        asked = self.studio.status(self.account(request), job_id).request
        return (
            *(asked.prompt, asked.negative_prompt, asked.rendered_num_frames, asked.width, asked.height),
            *(asked.num_inference_steps, asked.guidance_scale, False, asked.seed, asked.fps),
        )

    @_user_errors
    def delete(self, job_id: str, followed: str | None, request: gr.Request) -> str | None:
        self.studio.delete(self.account(request), job_id)
        gr.Info("Deleted.")
        return None if followed == job_id else followed


def add_api(studio: Studio) -> None:
    """The named events for gradio_client: each answers at once; poll /status until the job ends."""

    def account(request: gr.Request) -> str:
        return account_of(studio, request)

    @_user_errors
    def submit(  # noqa: PLR0917 - the API's parameters, in diffusers' order
        request: gr.Request,
        prompt: str,
        negative_prompt: str = DEFAULTS["negative_prompt"],
        num_frames: int = DEFAULTS["num_frames"],
        height: int = DEFAULTS["height"],
        width: int = DEFAULTS["width"],
        num_inference_steps: int = DEFAULTS["num_inference_steps"],
        guidance_scale: float = DEFAULTS["guidance_scale"],
        seed: int | None = None,
        fps: int = DEFAULTS["fps"],
    ) -> dict[str, Any]:
        """Queue a prompt; returns the job (its job_id, status and seed) at once."""
        params = {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "num_frames": num_frames,
            "height": height,
            "width": width,
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "seed": seed,
            "fps": fps,
        }
        return studio.submit(account(request), params, address_of(request)).model_dump(mode="json")

    @_user_errors
    def status(request: gr.Request, job_id: str) -> dict[str, Any]:
        """A job's status, progress, queue position and, once COMPLETED, its download_url."""
        return studio.status(account(request), job_id).model_dump(mode="json")

    @_user_errors
    def jobs(request: gr.Request, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        """Your jobs, newest first; pass next_cursor back as cursor for the next page."""
        # Gradio passes what the caller sent, typed or not: checked here, as REST's query parameters are.
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise InvalidRequest({"limit": f"limit must be an integer, got {limit!r}"})
        if cursor is not None and not isinstance(cursor, str):
            raise InvalidRequest({"cursor": f"cursor must be text, got {cursor!r}"})
        return studio.jobs(account(request), limit, cursor).model_dump(mode="json")

    @_user_errors
    def cancel(request: gr.Request, job_id: str) -> dict[str, Any]:
        """Cancel a pending job, or stop a running one at its next step."""
        return studio.cancel(account(request), job_id).model_dump(mode="json")

    for fn in (submit, status, jobs, cancel):
        gr.api(fn, api_name=fn.__name__, concurrency_limit=None)  # type: ignore[attr-defined]
