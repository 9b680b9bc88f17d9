"""The Gradio Blocks page: prompt form, live job card, player and the account's gallery."""

# No `from __future__ import annotations` here: Gradio reads these handlers' type hints at runtime.

from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

import gradio as gr
from redis.exceptions import RedisError

from mochi_app import cards
from mochi_app.callers import NotSignedIn
from mochi_app.errors import QUEUE_UNREACHABLE, BatchNotFound, JobNotFound
from mochi_app.events import account_of, address_of, user_errors
from mochi_app.gallery import GALLERY_PAGE_SIZE, ContactSheet, Gallery, Shown, Tile
from mochi_app.gradio_api import DEFAULTS, add_api
from mochi_app.page_assets import SIGN_IN_JS, SIGN_OUT_JS
from mochi_app.presets import PRESETS, preset_shape
from mochi_app.provenance import read_provenance, request_of
from mochi_app.public import BatchPublic
from mochi_app.schemas import (
    FRAMES_PER_LATENT,
    MIN_NUM_FRAMES,
    MIN_NUM_INFERENCE_STEPS,
    SIDE_MULTIPLE_PX,
    GenerationRequest,
    InvalidRequest,
    snap_num_frames,
)
from mochi_app.studio import Studio
from mochi_app.sweeps import MAX_SWEEP_SEEDS

POLL_INTERVAL_S = 1.0
# name: (width, height), clamped to the configured limits.
ASPECTS = {"Landscape 848x480": (848, 480), "Portrait 480x848": (480, 848), "Square 480x480": (480, 480)}
EXAMPLE_PROMPTS = [
    "A red fox trots through fresh snow at dawn, its breath misting in the cold air",
    "Waves roll onto a black sand beach at sunset, seen from a low drone",
    "A paper boat drifts down a rain-filled gutter past glowing shop windows at night",
    "Close-up of a hummingbird hovering at a purple flower, slow motion",
]
TITLE = "Mochi video studio"  # the page's, the API docs' and the README's
# Handlers the page calls on its own: hidden from the API page, never queued behind Generate or each other.
INTERNAL: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None, "show_progress": "hidden"}
# The form's fields, one control each, in the request's order; the "Random seed" box comes after them.
FORM_FIELDS = tuple(GenerationRequest.model_fields)
# Brings the job card into view after Generate or Open: on a phone it is below the form, or above the gallery.
SHOW_CARD_JS = "() => document.querySelector('.job-card')?.scrollIntoView({behavior: 'smooth', block: 'nearest'})"
# Brings a new sweep's contact sheet into view once it is filled.
SHOW_SHEET_JS = "() => document.querySelector('.contact-sheet')?.scrollIntoView({behavior: 'smooth', block: 'start'})"
SWEEP_DEFAULT_SEEDS = 4


def form_params(values: tuple[Any, ...]) -> tuple[dict[str, Any], bool]:
    """The form's values (`StudioPage.inputs`: the request's fields in order, then "Random seed") as the
    request's parameters by name, and whether "Random seed" is ticked."""
    *fields, random_seed = values
    return dict(zip(FORM_FIELDS, fields, strict=True)), bool(random_seed)


def build_ui(studio: Studio) -> gr.Blocks:
    """The studio page; every handler acts for the visitor's own account only."""
    page: gr.Blocks
    with gr.Blocks(title=TITLE, analytics_enabled=False) as page:
        StudioPage(studio, page)
        add_api(studio)
    return page


class StudioPage:
    """Builds the page's components inside a Blocks context, then wires their events."""

    def __init__(self, studio: Studio, blocks: gr.Blocks) -> None:
        self.studio = studio
        self.limits = studio.settings.limits
        self.followed = gr.State(None)  # the job id the card and player follow
        self.followed_batch = gr.State(None)  # the seed sweep the contact sheet shows
        self.last_seed = gr.State(None)
        self.cursors = gr.State([None])  # one cursor per gallery page visited; the last is the page shown
        self.next_cursor = gr.State(None)
        self.timer = gr.Timer(POLL_INTERVAL_S, active=False)
        gr.Markdown(f"# {TITLE}\nText to video with Genmo's Mochi 1.")
        self.banner = gr.HTML(cards.model_banner(None))
        self._sign_in()
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                self._form()
            with gr.Column(scale=6):
                self.job_card = gr.HTML(cards.status_card(None))
                self.video = gr.HTML("")
                self.cancel_followed = gr.Button("Cancel this job", size="sm", variant="stop", visible=False)
        self.sheet = ContactSheet()
        gr.Markdown("## Your videos")
        with gr.Row():
            self.newer = gr.Button("← Newer", size="sm", interactive=False)
            self.older = gr.Button("Older →", size="sm", interactive=False)
        self.gallery = Gallery()
        # What a refresh shows depends on, and what it shows.
        self.watched = [self.followed, self.cursors, self.gallery.armed, self.followed_batch]
        self.shown = [
            *(self.banner, self.job_card, self.video, self.cancel_followed, self.next_cursor),
            *(self.timer, self.newer, self.older, *self.gallery.outputs, *self.sheet.outputs),
        ]
        blocks.load(self.who_is_it, None, self.who, **INTERNAL)
        blocks.load(self.refresh, self.watched, self.shown, **INTERNAL)
        blocks.load(self.quote_form, self.quoting, self.quoted, **INTERNAL)
        blocks.load(self.preset_costs, self.inputs, self.preset, **INTERNAL)
        blocks.load(self.count_tokens, self.prompt, self.prompt_tokens, **INTERNAL)
        blocks.load(self.count_tokens, self.negative, self.negative_tokens, **INTERNAL)
        self.timer.tick(self.refresh, self.watched, self.shown, **INTERNAL)
        self._wire_form()
        self._wire_jobs()

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

    @property
    def max_frames(self) -> int:
        """The most frames the form offers: the largest 6k + 1 within the limit."""
        return MIN_NUM_FRAMES + (self.limits.max_num_frames - MIN_NUM_FRAMES) // FRAMES_PER_LATENT * FRAMES_PER_LATENT

    def _form(self) -> None:
        limits = self.limits
        max_frames = self.max_frames
        self.prompt = gr.Textbox(label="Prompt", lines=3, placeholder="A red fox trots through fresh snow at dawn")
        self.prompt_tokens = gr.Markdown("")
        gr.Examples([[prompt] for prompt in EXAMPLE_PROMPTS], [self.prompt], label="Try a prompt",
                    api_visibility="private")  # fmt: skip
        self.negative = gr.Textbox(label="Negative prompt", lines=1, placeholder="What the video should not show")
        self.negative_tokens = gr.Markdown("")
        self.preset = gr.Radio(list(PRESETS), value="Standard", label="Quality preset")
        self.aspect = gr.Radio(list(ASPECTS), value=next(iter(ASPECTS)), label="Shape")
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
        self.quote = gr.Markdown("", elem_classes="quote")
        self.generate = gr.Button("Generate", variant="primary")
        with gr.Row(equal_height=True, elem_classes="sweep-row"):
            self.sweep_count = gr.Slider(
                2, MAX_SWEEP_SEEDS, value=SWEEP_DEFAULT_SEEDS, step=1, precision=0, label="Seeds to try", scale=3
            )
            self.sweep = gr.Button("Sweep seeds", size="md", scale=2)
        with gr.Accordion("Reproduce a video", open=False):
            self.reproduce_file = gr.File(
                label="Drop a studio MP4: the form gets the request it was made with (the file is not kept)",
                file_types=[".mp4"],
                type="filepath",
            )
        self.fields: dict[str, gr.components.Component] = {
            "prompt": self.prompt,
            "negative_prompt": self.negative,
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance,
            "seed": self.seed,
            "fps": self.fps,
        }
        if set(self.fields) != set(FORM_FIELDS):  # a new request field needs a control, and no control is spare
            raise RuntimeError(f"the form's fields {sorted(self.fields)} are not the request's {sorted(FORM_FIELDS)}")
        self.inputs = [*(self.fields[name] for name in FORM_FIELDS), self.random_seed]
        # The quote's inputs (the sweep's seed count, then the form) and what it shows: the line, the sweep
        # button's cost, and each field marked or not.
        self.quoting = [self.sweep_count, *self.inputs]
        self.quoted = [self.quote, self.sweep, *self.fields.values()]
        self.filled = [*self.inputs, self.preset, self.aspect]  # what a job's request sets in the form (`_form_of`)

    def account(self, request: gr.Request) -> str:
        return account_of(self.studio, request)

    def then_refresh(self, event: Any) -> Any:
        return event.then(self.refresh, self.watched, self.shown, **INTERNAL)

    def refresh(
        self, job_id: str | None, pages: list[str | None], armed: str | None, batch_id: str | None, request: gr.Request
    ) -> Shown:
        """Everything that changes while jobs run: banner, job card, player, contact sheet, gallery page, timer."""
        try:
            account = self.account(request)
            job = self.studio.status(account, job_id) if job_id else None
            batch = self._batch(account, batch_id)
            page_of_jobs = self.studio.jobs(account, GALLERY_PAGE_SIZE, pages[-1])
            card, workers = self.studio.model(), self.studio.workers()
        except JobNotFound:  # the followed job was deleted meanwhile
            return self.refresh(None, pages, armed, batch_id, request)
        except NotSignedIn as exc:
            return {self.job_card: f'<div class="job-card">{escape(cards.sentence(str(exc)))}</div>'}
        except RedisError:
            unreachable = f'<span class="error">{cards.sentence(QUEUE_UNREACHABLE)}</span> Retrying…'
            return {self.job_card: f'<div class="job-card">{unreachable}</div>'}
        # The timer runs only while something of this visitor's can still change, a worker is starting, or none
        # has ever been ready (a page opened before the first worker registers must see it arrive).
        followed = [*([job] if job else []), *(batch.jobs if batch else [])]
        busy = any(not item.status.is_terminal for item in [*page_of_jobs.jobs, *followed])
        busy = busy or card is None or any(worker.stage.is_starting for worker in workers)
        return {
            self.banner: cards.model_banner(card, workers),
            self.job_card: cards.status_card(job),
            self.video: cards.player(job),
            self.cancel_followed: gr.Button(visible=job is not None and not job.status.is_terminal),
            **self.gallery.show(page_of_jobs.jobs, armed),
            **self.sheet.show(batch),
            self.next_cursor: page_of_jobs.next_cursor,
            self.timer: gr.Timer(active=busy),
            self.newer: gr.Button(interactive=len(pages) > 1),
            self.older: gr.Button(interactive=page_of_jobs.next_cursor is not None),
        }

    def _batch(self, account: str, batch_id: str | None) -> BatchPublic | None:
        """The followed sweep, or None (none followed, or all its jobs deleted meanwhile)."""
        try:
            return self.studio.batch(account, batch_id) if batch_id else None
        except BatchNotFound:
            return None

    def _wire_form(self) -> None:
        self.prompt.change(self.count_tokens, self.prompt, self.prompt_tokens, trigger_mode="always_last", **INTERNAL)
        self.negative.change(
            self.count_tokens, self.negative, self.negative_tokens, trigger_mode="always_last", **INTERNAL
        )
        for slider in (self.num_frames, self.fps):
            slider.change(cards.frames_label, [self.num_frames, self.fps], self.duration, **INTERNAL)
        self.preset.change(self.apply_preset, self.preset, [self.steps, self.num_frames], **INTERNAL)
        self.aspect.change(self.apply_aspect, self.aspect, [self.width, self.height], **INTERNAL)
        for control in (self.width, self.height, self.guidance):
            control.change(self.preset_costs, self.inputs, self.preset, trigger_mode="always_last", **INTERNAL)
        self.reuse_seed.click(self.reuse, self.last_seed, [self.random_seed, self.seed], **INTERNAL)
        controls: list[Any] = self.quoting  # each a form control, all of which have .change
        for control in controls:
            control.change(self.quote_form, self.quoting, self.quoted, trigger_mode="always_last", **INTERNAL)
        for side, name, maximum in ((self.width, "width", self.limits.max_width_px),
                                    (self.height, "height", self.limits.max_height_px)):  # fmt: skip
            side.change(self.side_snapper(name, maximum), side, side, trigger_mode="always_last", **INTERNAL)
        self.num_frames.change(
            self.snap_frames, self.num_frames, self.num_frames, trigger_mode="always_last", **INTERNAL
        )
        self.reproduce_file.upload(self.reproduce, self.reproduce_file, [*self.filled, self.reproduce_file], **INTERNAL)
        submitted = [self.followed, self.last_seed, self.seed, self.cursors]
        self._wire_submit(self.generate, self.submit_form, self.inputs, submitted, SHOW_CARD_JS)
        swept = [self.followed_batch, self.followed, self.cursors]
        self._wire_submit(self.sweep, self.submit_sweep, self.quoting, swept, SHOW_SHEET_JS)

    def _wire_submit(self, button: gr.Button, submit: Any, inputs: list[Any], outputs: list[Any], show_js: str) -> None:
        """A click marks the fields a submit would refuse, then submits with no progress shown (its error is
        the toast alone: no output, such as the seed box, shows a red "Error" of its own), then refreshes
        and brings what it made into view."""
        fields = list(self.fields.values())
        marked = button.click(self.mark_form, self.inputs, fields, **INTERNAL)
        queued = marked.then(
            submit, inputs, outputs, api_visibility="private", concurrency_limit=None, show_progress="hidden"
        )
        self.then_refresh(queued.then(self.quote_line, self.quoting, self.quote, **INTERNAL)).then(None, js=show_js)

    def count_tokens(self, text: str) -> str:
        limit = self.limits.max_prompt_tokens
        if not text.strip():
            return cards.tokens_label(0, limit)
        try:
            return cards.tokens_label(self.studio.models.count_tokens(text.strip()), limit)
        except RedisError:
            return cards.tokens_label(None, limit)

    def quote_form(self, count: float, request: gr.Request, *values: Any) -> Shown:
        """The form's cost and start as the page shows them before Generate (`values` as submit_form's), the
        sweep button with what `count` seeds would cost ("Sweep 4 seeds · about 3 min"), and each field
        marked if the request would be refused for it (an empty prompt only once submitted)."""
        params, _ = form_params(values)
        params["prompt"] = params["prompt"] or "a prompt"  # what it costs does not depend on the words
        seeds = int(count)
        sweep = f"Sweep {seeds} seeds"
        try:
            quote = self.studio.quote(self.account(request), params)
            line, errors = cards.quote_label(quote), {}
            sweep += f" · about {cards.about(quote.estimated_run_s * seeds)}"
        except InvalidRequest as exc:
            line, errors = cards.sentence(str(exc)), exc.errors
        except (NotSignedIn, RedisError):
            line, errors = "", {}
        return {self.quote: line, self.sweep: gr.Button(sweep), **self._marks(errors)}

    def quote_line(self, count: float, request: gr.Request, *values: Any) -> str:
        """The quote line alone, after a submit: the marks stay as the submit's check left them."""
        return str(self.quote_form(count, request, *values)[self.quote])

    def mark_form(self, *values: Any) -> Shown:
        """Each field marked if a submit of the form would be refused for it, the prompt too."""
        try:
            GenerationRequest.parse(form_params(values)[0], self.limits, self.studio.models.count_tokens)
        except InvalidRequest as exc:
            return self._marks(exc.errors)
        except RedisError:
            pass
        return self._marks({})

    def _marks(self, errors: dict[str, str]) -> Shown:
        return {
            field: gr.update(elem_classes=["invalid"] if name in errors else []) for name, field in self.fields.items()
        }

    def side_snapper(self, name: str, maximum: int) -> Callable[[float | None], Any]:
        """The handler that sets a width or height that is not a multiple of 16 to the nearest one within the
        limits, and says so (the slider itself holds a typed value to its range)."""

        def snap_side(side: float | None) -> Any:
            if side is None or side % SIDE_MULTIPLE_PX == 0:
                return gr.skip()
            snapped = min(max(round(side / SIDE_MULTIPLE_PX) * SIDE_MULTIPLE_PX, self.limits.min_side_px), maximum)
            gr.Info(f"The {name} is a multiple of {SIDE_MULTIPLE_PX} px: {side:g} set to {snapped}.")
            return snapped

        return snap_side

    def snap_frames(self, frames: float | None) -> Any:
        """A frame count Mochi cannot render (it takes 6k + 1), set to the nearest one it can, saying so."""
        if frames is None or (snapped := min(snap_num_frames(int(frames)), self.max_frames)) == frames:
            return gr.skip()
        gr.Info(f"Mochi renders 6k + 1 frames: {frames:g} frames set to {snapped}.")
        return snapped

    def apply_preset(self, name: str | None) -> tuple[Any, Any]:
        if name not in PRESETS:  # none chosen: a remixed job's own steps and frames stay
            return gr.skip(), gr.skip()
        return preset_shape(name, self.limits)

    def apply_aspect(self, name: str | None) -> tuple[Any, Any]:
        if name not in ASPECTS:  # none chosen: a remixed job's own size stays
            return gr.skip(), gr.skip()
        width, height = ASPECTS[name]
        return min(width, self.limits.max_width_px), min(height, self.limits.max_height_px)

    def _run_s(self, request: gr.Request, values: tuple[Any, ...], **changes: Any) -> float | None:
        """The predicted GPU-seconds of the form (`values` as submit_form's) with `changes`; None when it
        cannot be quoted (refused, nobody signed in, the queue away)."""
        params = form_params(values)[0] | {"prompt": "a prompt"} | changes
        try:
            return self.studio.quote(self.account(request), params).estimated_run_s
        except (InvalidRequest, NotSignedIn, RedisError):
            return None

    def preset_costs(self, request: gr.Request, *values: Any) -> Any:
        """Each preset's name with what it would cost at the form's size ("Draft · about 40 s")."""
        choices = []
        for name in PRESETS:
            steps, frames = self.apply_preset(name)
            run_s = self._run_s(request, values, num_inference_steps=steps, num_frames=frames)
            choices.append((name if run_s is None else f"{name} · about {cards.about(run_s)}", name))
        return gr.Radio(choices=choices)

    @staticmethod
    def reuse(used: int | None) -> tuple[Any, Any]:
        return (False, used) if used is not None else (gr.skip(), gr.skip())

    @user_errors
    def submit_form(self, request: gr.Request, *values: Any) -> tuple[Any, ...]:
        """Queue the form: `values` are `self.inputs`' (the request's fields, then "Random seed").

        `request` comes first: Gradio puts it at its place among the parameters, before the form's values.
        """
        params, random_seed = form_params(values)
        if random_seed:
            params["seed"] = None
        job = self.studio.submit(self.account(request), params, address_of(request))
        gr.Info(f"Queued job {job.job_id[:8]} with seed {job.request.seed}.")
        # With "Random seed" ticked the box is left alone: "Reuse last seed" puts the seed there.
        shown_seed = gr.skip() if random_seed else job.request.seed
        return job.job_id, job.request.seed, shown_seed, [None]

    @user_errors
    def submit_sweep(self, count: int, request: gr.Request, *values: Any) -> tuple[Any, ...]:
        """Queue the form at `count` seeds: random ones with "Random seed" ticked, else the box's seed and
        those after it. The contact sheet follows the sweep, the card its first job."""
        params, random_seed = form_params(values)
        params["count"] = int(count)
        if random_seed:
            params.pop("seed")
        batch = self.studio.sweep(self.account(request), params, address_of(request))
        gr.Info(f"Queued {len(batch.jobs)} jobs, seeds {', '.join(map(str, batch.seeds))}.")
        return batch.batch_id, batch.jobs[0].job_id, [None]

    def _wire_jobs(self) -> None:
        self.then_refresh(self.cancel_followed.click(self.cancel_job, self.followed, None, **INTERNAL))
        self.then_refresh(self.sheet.cancel.click(self.cancel_sweep, self.followed_batch, None, **INTERNAL))
        for sheet_tile in self.sheet.tiles:
            self._open_on_click(sheet_tile)
            final = sheet_tile.buttons["final"].click(self.final_of_tile, sheet_tile.job_id, self.followed, **INTERNAL)
            self.then_refresh(final).then(None, js=SHOW_CARD_JS)
        self.then_refresh(self.older.click(self.go_older, [self.cursors, self.next_cursor], self.cursors, **INTERNAL))
        self.then_refresh(self.newer.click(self.go_newer, self.cursors, self.cursors, **INTERNAL))
        for tile in self.gallery.tiles:
            self._wire_tile(tile)

    def _wire_tile(self, tile: Tile) -> None:
        """A tile's buttons act on the job id the browser holds for it: the job the visitor saw there."""
        self._open_on_click(tile)
        tile.buttons["remix"].click(self.remix, tile.job_id, self.filled, **INTERNAL)
        self.then_refresh(
            tile.buttons["end"].click(self.end_job, [tile.job_id, self.gallery.armed], self.gallery.armed, **INTERNAL)
        )

    def _open_on_click(self, tile: Tile) -> None:
        followed = [self.followed, self.followed_batch]
        opened = self.then_refresh(tile.buttons["open"].click(self.open_job, tile.job_id, followed, **INTERNAL))
        opened.then(None, js=SHOW_CARD_JS)

    def open_job(self, job_id: str, request: gr.Request) -> tuple[Any, Any]:
        """Follow the tile's job, and its sweep's contact sheet when it was one of a sweep's (so a sweep is
        found again from any of its jobs after a reload)."""
        try:
            batch_id = self.studio.status(self.account(request), job_id).batch_id if job_id else None
        except (JobNotFound, NotSignedIn, RedisError):  # the refresh that follows says what it can
            batch_id = None
        return job_id or None, batch_id or gr.skip()

    @user_errors
    def end_job(self, job_id: str, armed: str | None, request: gr.Request) -> str | None:
        """Cancel a job that can still change; delete a finished one on the second click (returns what is armed)."""
        account = self.account(request)
        job = self.studio.status(account, job_id)
        if not job.status.is_terminal:
            self.studio.cancel(account, job_id)
            return None
        if armed != job_id:
            return job_id
        self.studio.delete(account, job_id)
        gr.Info("Deleted.")
        return None

    @staticmethod
    def go_older(pages: list[str | None], cursor: str | None) -> list[str | None]:
        return [*pages, cursor] if cursor is not None else pages

    @staticmethod
    def go_newer(pages: list[str | None]) -> list[str | None]:
        return pages[:-1] or [None]

    @user_errors
    def cancel_job(self, job_id: str | None, request: gr.Request) -> None:
        if job_id:
            self.studio.cancel(self.account(request), job_id)

    @user_errors
    def cancel_sweep(self, batch_id: str | None, request: gr.Request) -> None:
        if batch_id:
            self.studio.cancel_batch(self.account(request), batch_id)

    @user_errors
    def final_of_tile(self, job_id: str, request: gr.Request) -> str:
        """Queue the tile's job again with the Final steps at its seed and shape; the card follows the new job."""
        job = self.studio.make_final(self.account(request), job_id, address_of(request))
        gr.Info(f"Queued the final render of seed {job.request.seed} ({job.request.num_inference_steps} steps).")
        return job.job_id

    @user_errors
    def remix(self, job_id: str, request: gr.Request) -> Shown:
        """The job's request in the form, with its seed kept (and the frames it rendered)."""
        return self._form_of(self.studio.status(self.account(request), job_id).request)

    @user_errors
    def reproduce(self, path: str | None) -> Shown:
        """The request a dropped MP4's record holds, in the form with its seed; the upload is removed at once."""
        if not path:
            return {}
        try:
            asked = request_of(read_provenance(Path(path)))
        finally:
            Path(path).unlink(missing_ok=True)
        gr.Info("The form holds the request this video was made with: Generate renders it again.")
        return {**self._form_of(asked), self.reproduce_file: None}

    def _form_of(self, asked: GenerationRequest) -> Shown:
        form: Shown = {self.fields[name]: getattr(asked, name) for name in FORM_FIELDS}
        shape = (asked.num_inference_steps, asked.rendered_num_frames)
        preset = next((name for name in PRESETS if self.apply_preset(name) == shape), None)
        aspect = next((name for name in ASPECTS if self.apply_aspect(name) == (asked.width, asked.height)), None)
        chosen: Shown = {self.preset: preset, self.aspect: aspect}
        return {**form, self.num_frames: asked.rendered_num_frames, self.random_seed: False, **chosen}
