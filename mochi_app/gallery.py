"""The page's gallery: a fixed set of tiles built once, which each refresh fills with a page of the account's jobs.

The tiles never re-render, so a click always reaches a live event, and a tile whose job has not changed gets
the same HTML again, which the browser leaves alone (a video being watched keeps playing). Each tile carries
its job id in a hidden box the browser holds, so a click acts on the job the visitor saw there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.blocks import Block

from mochi_app import cards
from mochi_app.public import JobPublic

GALLERY_PAGE_SIZE = 6
EMPTY = "Nothing here yet: your videos appear here as you make them."
Shown = dict[Block, Any]  # what a handler changes on the page; the rest stays as it is


def end_label(job: JobPublic, armed: str | None) -> str:
    """The tile's third button: Cancel while the job can change; Delete, then a second click to confirm."""
    if not job.status.is_terminal:
        return "Cancel"
    return "Click again to delete" if armed == job.job_id else "Delete"


@dataclass(frozen=True)
class Tile:
    """One gallery tile's components."""

    column: gr.Column
    job_id: gr.Textbox  # hidden: the job shown here, as the browser has it
    media: gr.HTML
    caption: gr.HTML
    open: gr.Button
    remix: gr.Button
    end: gr.Button

    @classmethod
    def build(cls, index: int) -> Tile:
        with gr.Column(elem_classes="video-tile", visible=False, min_width=0) as column:
            job_id = gr.Textbox(visible=False, elem_classes="tile-job")
            media = gr.HTML("")
            caption = gr.HTML("")
            with gr.Row(elem_classes="tile-buttons"):
                open_button = gr.Button("Open", size="sm", elem_id=f"tile-{index}-open")
                remix = gr.Button("Remix", size="sm", elem_id=f"tile-{index}-remix")
                end = gr.Button("Delete", size="sm", variant="stop", elem_id=f"tile-{index}-end")
        return cls(column, job_id, media, caption, open_button, remix, end)

    def show(self, job: JobPublic | None, armed: str | None) -> Shown:
        if job is None:
            return {self.column: gr.Column(visible=False), self.job_id: ""}
        return {
            self.column: gr.Column(visible=True),
            self.job_id: job.job_id,
            self.media: cards.gallery_media(job),
            self.caption: cards.gallery_caption(job),
            self.end: gr.Button(end_label(job, armed)),
        }


class Gallery:
    """GALLERY_PAGE_SIZE tiles in a grid, and a line for an account with nothing yet."""

    def __init__(self) -> None:
        self.armed = gr.State(None)  # the job whose Delete was clicked once and awaits the second click
        self.empty = gr.Markdown(EMPTY, visible=False)
        with gr.Row(elem_classes="gallery-grid"):
            self.tiles = [Tile.build(index) for index in range(GALLERY_PAGE_SIZE)]

    @property
    def outputs(self) -> list[Block]:
        return [self.empty, *(part for tile in self.tiles for part in vars(tile).values())]

    def show(self, jobs: list[JobPublic], armed: str | None) -> Shown:
        shown: Shown = {self.empty: gr.Markdown(visible=not jobs)}
        for index, tile in enumerate(self.tiles):
            shown |= tile.show(jobs[index] if index < len(jobs) else None, armed)
        return shown
