"""The Gradio Blocks page: prompt form, live job card, player, the account's gallery, and the named API events."""

# No `from __future__ import annotations` here: Gradio reads these handlers' type hints at runtime.

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr
from redis.exceptions import RedisError

from mochi_app import cards
from mochi_app.accounts import account_for
from mochi_app.config import Limits
from mochi_app.schemas import MIN_NUM_FRAMES, MIN_NUM_INFERENCE_STEPS, GenerationRequest, InvalidRequest, JobPublic
from mochi_app.studio import JobConflict, JobNotFound, Studio

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

GALLERY_PAGE_SIZE = 6
POLL_INTERVAL_S = 1.0
QUEUE_UNREACHABLE = "The job queue is unreachable right now. Try again in a moment."
DEFAULTS = {name: field.default for name, field in GenerationRequest.model_fields.items()}
# name: (num_inference_steps, num_frames); clamped to the configured limits.
PRESETS = {"Draft": (24, 31), "Standard": (64, 85), "Final": (100, 163)}
# Handlers the page calls on its own: hidden from the API page, never queued behind Generate or each other.
INTERNAL: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None, "show_progress": "hidden"}

CSS = """
.banner { padding: 8px 12px; border-radius: 8px; background: var(--block-background-fill); }
.banner.warn { background: #fff4e5; color: #7a4100; }
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
    """Turn our errors into messages a person can act on (gr.Error), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (InvalidRequest, JobNotFound, JobConflict) as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except RedisError:
            log.warning("queue unreachable", exc_info=True)
            raise gr.Error(QUEUE_UNREACHABLE, print_exception=False) from None

    return wrapper  # type: ignore[return-value]


def _account(request: gr.Request) -> str:
    return account_for(request.headers)


def _preset(name: str, limits: Limits) -> tuple[int, int]:
    steps, frames = PRESETS[name]
    return min(steps, limits.max_num_inference_steps), min(frames, limits.max_num_frames)


def build_ui(studio: Studio) -> gr.Blocks:
    """The studio page; every handler acts for the visitor's own account only."""
    limits = studio.settings.limits
    max_frames = MIN_NUM_FRAMES + (limits.max_num_frames - MIN_NUM_FRAMES) // 6 * 6

    page: gr.Blocks
    with gr.Blocks(title="Mochi studio") as page:
        followed = gr.State(None)  # the job id the card and player follow
        last_seed = gr.State(None)
        cursors = gr.State([None])  # one cursor per gallery page visited; the last is the page shown
        next_cursor = gr.State(None)
        gallery = gr.State([])  # the shown page's jobs, as dicts; the gallery re-renders when it changes
        timer = gr.Timer(POLL_INTERVAL_S, active=False)

        gr.Markdown("# Mochi studio\nText to video with Genmo's Mochi 1.")
        banner = gr.HTML(cards.model_banner(None))
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                prompt = gr.Textbox(
                    label="Prompt", lines=3, placeholder="A red fox trots through fresh snow at dawn, cinematic"
                )
                prompt_tokens = gr.Markdown(cards.tokens_label(None, limits.max_prompt_tokens))
                negative = gr.Textbox(label="Negative prompt", lines=1, placeholder="What the video should not show")
                negative_tokens = gr.Markdown("")
                preset = gr.Radio(list(PRESETS), value="Standard", label="Quality preset")
                with gr.Accordion("Advanced", open=False):
                    num_frames = gr.Slider(
                        MIN_NUM_FRAMES, max_frames, value=DEFAULTS["num_frames"], step=6, precision=0, label="Frames"
                    )
                    duration = gr.Markdown(cards.frames_label(DEFAULTS["num_frames"], DEFAULTS["fps"]))
                    with gr.Row():
                        width = gr.Slider(
                            limits.min_side_px, limits.max_width_px, value=DEFAULTS["width"], step=16, precision=0,
                            label="Width (px)",
                        )  # fmt: skip
                        height = gr.Slider(
                            limits.min_side_px, limits.max_height_px, value=DEFAULTS["height"], step=16, precision=0,
                            label="Height (px)",
                        )  # fmt: skip
                    steps = gr.Slider(
                        MIN_NUM_INFERENCE_STEPS, limits.max_num_inference_steps, value=DEFAULTS["num_inference_steps"],
                        step=1, precision=0, label="Denoising steps",
                    )  # fmt: skip
                    guidance = gr.Slider(0, 20, value=DEFAULTS["guidance_scale"], step=0.1, label="Guidance scale")
                    with gr.Row():
                        random_seed = gr.Checkbox(value=True, label="Random seed")
                        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                        reuse_seed = gr.Button("Reuse last seed", size="sm")
                    fps = gr.Slider(1, limits.max_fps, value=DEFAULTS["fps"], step=1, precision=0, label="Frames/s")
                generate = gr.Button("Generate", variant="primary")
            with gr.Column(scale=6):
                job_card = gr.HTML(cards.status_card(None))
                video = gr.HTML("")
                cancel_followed = gr.Button("Cancel this job", size="sm", variant="stop", visible=False)

        gr.Markdown("## Your videos")
        with gr.Row():
            newer = gr.Button("← Newer", size="sm", interactive=False)
            older = gr.Button("Older →", size="sm", interactive=False)
        form = [prompt, negative, num_frames, width, height, steps, guidance, random_seed, seed, fps]

        # --- what the page shows, refreshed by the timer and after every action -------------------

        def refresh(job_id: str | None, pages: list[str | None], request: gr.Request) -> tuple[Any, ...]:
            account = _account(request)
            try:
                job = studio.status(account, job_id) if job_id else None
                page_of_jobs = studio.jobs(account, GALLERY_PAGE_SIZE, pages[-1])
                card = studio.model()
            except JobNotFound:  # the followed job was deleted meanwhile
                return refresh(None, pages, request)
            except RedisError:
                unreachable = f'<div class="job-card"><span class="error">{QUEUE_UNREACHABLE}</span> Retrying…</div>'
                return tuple(unreachable if output is job_card else gr.skip() for output in shown_outputs)
            busy = any(not item.status.is_terminal for item in [*page_of_jobs.jobs, *([job] if job else [])])
            return (
                cards.model_banner(card),
                cards.status_card(job),
                cards.player(job),
                gr.Button(visible=job is not None and not job.status.is_terminal),
                [item.model_dump(mode="json") for item in page_of_jobs.jobs],
                page_of_jobs.next_cursor,
                gr.Timer(active=busy),
                gr.Button(interactive=len(pages) > 1),
                gr.Button(interactive=page_of_jobs.next_cursor is not None),
            )

        shown_outputs = [banner, job_card, video, cancel_followed, gallery, next_cursor, timer, newer, older]

        def then_refresh(event: Any) -> None:
            event.then(refresh, [followed, cursors], shown_outputs, **INTERNAL)

        page.load(refresh, [followed, cursors], shown_outputs, **INTERNAL)
        timer.tick(refresh, [followed, cursors], shown_outputs, **INTERNAL)

        # --- the form ---------------------------------------------------------------------------

        def count_tokens(text: str) -> str:
            if not text.strip():
                return cards.tokens_label(0, limits.max_prompt_tokens)
            try:
                tokens = studio.models.count_tokens(text.strip())
            except RedisError:
                tokens = None
            return cards.tokens_label(tokens, limits.max_prompt_tokens)

        prompt.change(count_tokens, prompt, prompt_tokens, trigger_mode="always_last", **INTERNAL)
        negative.change(count_tokens, negative, negative_tokens, trigger_mode="always_last", **INTERNAL)
        num_frames.change(cards.frames_label, [num_frames, fps], duration, **INTERNAL)
        fps.change(cards.frames_label, [num_frames, fps], duration, **INTERNAL)
        preset.change(lambda name: _preset(name, limits), preset, [steps, num_frames], **INTERNAL)
        reuse_seed.click(
            lambda used: (False, used) if used is not None else (gr.skip(), gr.skip()),
            last_seed,
            [random_seed, seed],
            **INTERNAL,
        )

        @_user_errors
        def submit_form(  # noqa: PLR0917 - Gradio passes the form's components positionally
            prompt_text: str,
            negative_text: str,
            frames: int,
            width_px: int,
            height_px: int,
            step_count: int,
            guidance_scale: float,
            use_random_seed: bool,
            fixed_seed: int | None,
            frames_per_s: int,
            request: gr.Request,
        ) -> tuple[Any, ...]:
            params = {
                "prompt": prompt_text,
                "negative_prompt": negative_text,
                "num_frames": frames,
                "width": width_px,
                "height": height_px,
                "num_inference_steps": step_count,
                "guidance_scale": float(guidance_scale),
                "seed": None if use_random_seed else fixed_seed,
                "fps": frames_per_s,
            }
            job = studio.submit(_account(request), params)
            gr.Info(f"Queued job {job.job_id[:8]} with seed {job.request.seed}.")
            return job.job_id, job.request.seed, job.request.seed, [None]

        then_refresh(
            generate.click(
                submit_form,
                form,
                [followed, last_seed, seed, cursors],
                api_visibility="private",
                concurrency_limit=None,
            )
        )

        @_user_errors
        def cancel_job(job_id: str | None, request: gr.Request) -> None:
            if job_id:
                studio.cancel(_account(request), job_id)

        then_refresh(cancel_followed.click(cancel_job, followed, None, **INTERNAL))

        # --- the gallery ------------------------------------------------------------------------

        def go_older(pages: list[str | None], cursor: str | None) -> list[str | None]:
            return [*pages, cursor] if cursor is not None else pages

        then_refresh(older.click(go_older, [cursors, next_cursor], cursors, **INTERNAL))
        then_refresh(newer.click(lambda pages: pages[:-1] or [None], cursors, cursors, **INTERNAL))

        @gr.render(inputs=gallery)  # type: ignore[untyped-decorator]
        def show_gallery(items: list[dict[str, Any]]) -> None:
            if not items:
                gr.Markdown("Nothing here yet: your videos appear here as you make them.")
                return
            with gr.Row(elem_classes="gallery-grid"):
                for item in items:
                    show_gallery_item(JobPublic.model_validate(item))

        def show_gallery_item(job: JobPublic) -> None:
            with gr.Column(elem_classes="gallery-item", min_width=260):
                gr.HTML(cards.gallery_media(job))
                gr.HTML(cards.gallery_caption(job))
                with gr.Row():
                    open_button = gr.Button("Open", size="sm")
                    remix_button = gr.Button("Remix", size="sm")
                    if job.status.is_terminal:
                        end_button = gr.Button("Delete", size="sm", variant="stop")
                    else:
                        end_button = gr.Button("Cancel", size="sm", variant="stop")
                item = gr.State(job.job_id)
            then_refresh(open_button.click(lambda job_id: job_id, item, followed, **INTERNAL))
            remix_button.click(remix, item, form, **INTERNAL)
            if job.status.is_terminal:
                then_refresh(end_button.click(delete_job, [item, followed], followed, **INTERNAL))
            else:
                then_refresh(end_button.click(cancel_job, item, None, **INTERNAL))

        @_user_errors
        def remix(job_id: str, request: gr.Request) -> tuple[Any, ...]:
            asked = studio.status(_account(request), job_id).request
            return (
                *(asked.prompt, asked.negative_prompt, asked.rendered_num_frames, asked.width, asked.height),
                *(asked.num_inference_steps, asked.guidance_scale, False, asked.seed, asked.fps),
            )

        @_user_errors
        def delete_job(job_id: str, current: str | None, request: gr.Request) -> str | None:
            studio.delete(_account(request), job_id)
            gr.Info("Deleted.")
            return None if current == job_id else current

        add_api(studio)
    return page


def add_api(studio: Studio) -> None:
    """The named events for gradio_client: each answers at once; poll /status until the job ends."""

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
        return studio.submit(_account(request), params).model_dump(mode="json")

    @_user_errors
    def status(request: gr.Request, job_id: str) -> dict[str, Any]:
        """A job's status, progress, queue position and, once COMPLETED, its download_url."""
        return studio.status(_account(request), job_id).model_dump(mode="json")

    @_user_errors
    def jobs(request: gr.Request, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        """Your jobs, newest first; pass next_cursor back as cursor for the next page."""
        return studio.jobs(_account(request), limit, cursor).model_dump(mode="json")

    @_user_errors
    def cancel(request: gr.Request, job_id: str) -> dict[str, Any]:
        """Cancel a pending job, or stop a running one at its next step."""
        return studio.cancel(_account(request), job_id).model_dump(mode="json")

    for fn in (submit, status, jobs, cancel):
        gr.api(fn, api_name=fn.__name__, concurrency_limit=None)  # type: ignore[attr-defined]
