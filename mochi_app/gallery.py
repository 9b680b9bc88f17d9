"""The page's tiles of jobs, built once and filled by each refresh: the gallery (a page of the account's jobs)
and the contact sheet (the followed seed sweep's jobs).

The tiles never re-render, so a click always reaches a live event, and a tile whose job has not changed gets
the same HTML again, which the browser leaves alone (a video being watched keeps playing). Each tile carries
its job id in a hidden box the browser holds, so a click acts on the job the visitor saw there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import gradio as gr
from gradio.blocks import Block

from mochi_app import cards
from mochi_app.public import BatchPublic, JobPublic
from mochi_app.sweeps import MAX_SWEEP_SEEDS

GALLERY_PAGE_SIZE = 6
EMPTY = "Nothing here yet: your videos appear here as you make them."
Shown = dict[Block, Any]  # what a handler changes on the page; the rest stays as it is


def end_label(job: JobPublic, armed: str | None) -> str:
    """The tile's third button: Cancel while the job can change; Delete, then a second click to confirm."""
    if not job.status.is_terminal:
        return "Cancel"
    return "Click again to delete" if armed == job.job_id else "Delete"


# key: (label, variant) of each button on a tile, in order; the keys are part of each button's elem_id.
Buttons = dict[str, tuple[str, Literal["primary", "secondary", "stop"]]]
GALLERY_BUTTONS: Buttons = {"open": ("Open", "secondary"), "remix": ("Remix", "secondary"), "end": ("Delete", "stop")}
SHEET_BUTTONS: Buttons = {"open": ("Open", "secondary"), "final": ("Make final", "primary")}
Caption = Callable[[JobPublic], str]


@dataclass(frozen=True)
class Tile:
    """One tile's components: a job's picture, caption and buttons."""

    column: gr.Column
    job_id: gr.Textbox  # hidden: the job shown here, as the browser has it
    media: gr.HTML
    caption: gr.HTML
    buttons: dict[str, gr.Button]

    @classmethod
    def build(cls, elem_id: str, buttons: Buttons, kind: str = "video-tile") -> Tile:
        with gr.Column(elem_classes=kind, visible=False, min_width=0) as column:
            job_id = gr.Textbox(visible=False, elem_classes="tile-job")
            media = gr.HTML("")
            caption = gr.HTML("")
            with gr.Row(elem_classes="tile-buttons"):
                made = {
                    key: gr.Button(label, size="sm", variant=variant, elem_id=f"{elem_id}-{key}")
                    for key, (label, variant) in buttons.items()
                }
        return cls(column, job_id, media, caption, made)

    @property
    def parts(self) -> list[Block]:
        return [self.column, self.job_id, self.media, self.caption, *self.buttons.values()]

    def show(self, job: JobPublic | None, caption: Caption, labels: dict[str, str] | None = None) -> Shown:
        """The tile for `job` (hidden for None), with `labels` for the buttons whose words change."""
        if job is None:
            return {self.column: gr.Column(visible=False), self.job_id: ""}
        return {
            self.column: gr.Column(visible=True),
            self.job_id: job.job_id,
            self.media: cards.gallery_media(job),
            self.caption: caption(job),
            **{self.buttons[key]: gr.Button(label) for key, label in (labels or {}).items()},
        }


class Gallery:
    """GALLERY_PAGE_SIZE tiles in a grid, and a line for an account with nothing yet."""

    def __init__(self) -> None:
        self.armed = gr.State(None)  # the job whose Delete was clicked once and awaits the second click
        self.empty = gr.Markdown(EMPTY, visible=False)
        with gr.Row(elem_classes="gallery-grid"):
            self.tiles = [Tile.build(f"tile-{index}", GALLERY_BUTTONS) for index in range(GALLERY_PAGE_SIZE)]

    @property
    def outputs(self) -> list[Block]:
        return [self.empty, *(part for tile in self.tiles for part in tile.parts)]

    def show(self, jobs: list[JobPublic], armed: str | None) -> Shown:
        shown: Shown = {self.empty: gr.Markdown(visible=not jobs)}
        for index, tile in enumerate(self.tiles):
            job = jobs[index] if index < len(jobs) else None
            labels = {"end": end_label(job, armed)} if job is not None else None
            shown |= tile.show(job, cards.gallery_caption, labels)
        return shown


class ContactSheet:
    """The followed seed sweep: one tile per seed, each with Open and Make final; hidden while none is followed."""

    def __init__(self) -> None:
        with gr.Column(visible=False, elem_classes="contact-sheet") as self.box:
            self.heading = gr.HTML("")
            with gr.Row(elem_classes="gallery-grid"):
                self.tiles = [
                    Tile.build(f"sheet-{index}", SHEET_BUTTONS, "sheet-tile") for index in range(MAX_SWEEP_SEEDS)
                ]
            self.cancel = gr.Button("Cancel the sweep", size="sm", variant="stop", visible=False)

    @property
    def outputs(self) -> list[Block]:
        return [self.box, self.heading, self.cancel, *(part for tile in self.tiles for part in tile.parts)]

    def show(self, batch: BatchPublic | None) -> Shown:
        if batch is None:
            return {self.box: gr.Column(visible=False)}
        shown: Shown = {
            self.box: gr.Column(visible=True),
            self.heading: cards.sweep_heading(batch),
            self.cancel: gr.Button(visible=not batch.finished),
        }
        for index, tile in enumerate(self.tiles):
            shown |= tile.show(batch.jobs[index] if index < len(batch.jobs) else None, cards.sheet_caption)
        return shown
