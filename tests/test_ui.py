"""The page's handlers, called as Gradio calls them, on a real Valkey: what each refresh shows."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
from redis import Redis

from benchmarks._common import completed_record
from mochi_app.config import Settings
from mochi_app.gallery import GALLERY_PAGE_SIZE
from mochi_app.provenance import provenance
from mochi_app.schemas import GenerationRequest
from mochi_app.served_model import publish_served_model
from mochi_app.studio import Studio
from mochi_app.tiny_model import build_tiny_tokenizer
from mochi_app.ui import FORM_FIELDS, TITLE, StudioPage, build_ui
from mochi_app.video import write_mp4
from tests.harness import REPO, SMALL


@pytest.fixture
def page(redis: Redis, settings: Settings) -> StudioPage:
    with gr.Blocks() as blocks:
        return StudioPage(Studio(redis, settings), blocks)


@pytest.fixture
def visitor(page: StudioPage) -> gr.Request:
    """A visitor with an account of their own, so other tests' jobs never show."""
    _, key = page.studio.accounts.create(f"ui-{uuid.uuid4().hex[:8]}")
    return gr.Request(headers={"authorization": f"Bearer {key}"}, client={"host": "127.0.0.1"})


def tokenizer_json() -> str:
    return str(build_tiny_tokenizer().to_str())


def owner(page: StudioPage, visitor: gr.Request) -> str:
    return page.account(visitor)


def shown(
    page: StudioPage,
    visitor: gr.Request,
    job_id: str | None,
    cursors: list[str | None] | None = None,
    armed: str | None = None,
    batch_id: str | None = None,
) -> dict[str, object]:
    """What a refresh puts on the page, by the component's name on StudioPage (a gallery tile's as
    `tile{n}.{name}`, a contact sheet tile's as `sheet{n}.{name}`)."""
    changed = page.refresh(job_id, cursors or [None], armed, batch_id, visitor)
    names = {id(component): name for name, component in vars(page).items()}
    names[id(page.gallery.empty)] = "gallery.empty"
    names |= {id(component): f"sheet.{name}" for name, component in vars(page.sheet).items() if name != "tiles"}
    for prefix, tiles in (("tile", page.gallery.tiles), ("sheet", page.sheet.tiles)):
        for index, tile in enumerate(tiles):
            parts = {"column": tile.column, "job_id": tile.job_id, "media": tile.media, "caption": tile.caption}
            named = {**parts, **tile.buttons}
            names |= {id(component): f"{prefix}{index}.{name}" for name, component in named.items()}
    return {names[id(component)]: value for component, value in changed.items()}


def tile_jobs(changed: dict[str, object]) -> list[str]:
    """The job ids the gallery's tiles hold, in order; empty tiles left out."""
    return [str(changed[f"tile{index}.job_id"]) for index in range(GALLERY_PAGE_SIZE) if changed[f"tile{index}.job_id"]]


def test_the_timer_runs_until_a_worker_has_been_ready(page: StudioPage, visitor: gr.Request) -> None:
    """A page opened before any worker registers keeps asking, so the worker's arrival shows without a reload."""
    before = shown(page, visitor, None)
    assert before["timer"].active is True  # type: ignore[attr-defined]
    assert "No worker has started yet" in str(before["banner"])
    publish_served_model(page.studio.redis, page.studio.settings.queue_name, "tiny", True, tokenizer_json())
    after = shown(page, visitor, None)
    assert after["timer"].active is False  # type: ignore[attr-defined]
    assert "Model: <b>tiny</b>" in str(after["banner"])


def test_the_timer_runs_while_a_job_can_change_and_stops_after(page: StudioPage, visitor: gr.Request) -> None:
    publish_served_model(page.studio.redis, page.studio.settings.queue_name, "tiny", True, tokenizer_json())
    assert shown(page, visitor, None)["timer"].active is False  # type: ignore[attr-defined]
    job = page.studio.submit(owner(page, visitor), {"prompt": "a cat", **SMALL})
    followed = shown(page, visitor, job.job_id)
    assert followed["timer"].active is True  # type: ignore[attr-defined]
    assert "Queued" in str(followed["job_card"]) and followed["cancel_followed"].visible is True  # type: ignore[attr-defined]
    page.studio.cancel(owner(page, visitor), job.job_id)
    after = shown(page, visitor, job.job_id)
    assert after["timer"].active is False  # type: ignore[attr-defined]
    assert "Cancelled." in str(after["job_card"])


def test_the_gallery_pages_and_the_buttons_follow(page: StudioPage, visitor: gr.Request) -> None:
    ids = [page.studio.submit(owner(page, visitor), {"prompt": f"clip {n}", **SMALL}).job_id for n in range(8)]
    first = shown(page, visitor, None)
    assert tile_jobs(first) == ids[::-1][:GALLERY_PAGE_SIZE]
    assert first["older"].interactive is True and first["newer"].interactive is False  # type: ignore[attr-defined]
    pages = page.go_older([None], first["next_cursor"])  # type: ignore[arg-type]
    second = shown(page, visitor, None, pages)
    assert tile_jobs(second) == ids[::-1][GALLERY_PAGE_SIZE:]
    assert second["tile2.column"].visible is False  # type: ignore[attr-defined]
    assert second["newer"].interactive is True  # type: ignore[attr-defined]
    assert page.go_newer(pages) == [None]


def test_an_empty_gallery_says_so_and_hides_its_tiles(page: StudioPage, visitor: gr.Request) -> None:
    empty = shown(page, visitor, None)
    assert empty["gallery.empty"].visible is True and tile_jobs(empty) == []  # type: ignore[attr-defined]
    page.studio.submit(owner(page, visitor), {"prompt": "one", **SMALL})
    assert shown(page, visitor, None)["gallery.empty"].visible is False  # type: ignore[attr-defined]


def test_a_tiles_end_button_cancels_then_deletes_on_a_second_click(page: StudioPage, visitor: gr.Request) -> None:
    job = page.studio.submit(owner(page, visitor), {"prompt": "to go", **SMALL}).job_id
    assert shown(page, visitor, None)["tile0.end"].value == "Cancel"  # type: ignore[attr-defined]
    assert page.end_job(job, None, visitor) is None  # a job that can still change: cancelled at once
    assert page.studio.status(owner(page, visitor), job).status == "CANCELLED"
    assert shown(page, visitor, None)["tile0.end"].value == "Delete"  # type: ignore[attr-defined]
    armed = page.end_job(job, None, visitor)  # the first click on Delete only asks again
    assert armed == job and page.studio.status(owner(page, visitor), job).status == "CANCELLED"
    assert shown(page, visitor, None, armed=armed)["tile0.end"].value == "Click again to delete"  # type: ignore[attr-defined]
    assert page.end_job(job, armed, visitor) is None
    assert tile_jobs(shown(page, visitor, None)) == []


def test_a_tiles_job_id_acts_only_for_its_owner(page: StudioPage, visitor: gr.Request, redis: Redis) -> None:
    """The tile's job id comes back from the browser: another account's id is a job that does not exist."""
    theirs = page.studio.submit("someone-else", {"prompt": "theirs", **SMALL}).job_id
    for act in (lambda: page.end_job(theirs, theirs, visitor), lambda: page.remix(theirs, visitor)):
        with pytest.raises(gr.Error, match="no job with id"):
            act()
    assert page.studio.status("someone-else", theirs).status == "PENDING"


def test_a_deleted_followed_job_is_dropped_not_an_error(page: StudioPage, visitor: gr.Request) -> None:
    job = page.studio.submit(owner(page, visitor), {"prompt": "short-lived", **SMALL})
    page.studio.cancel(owner(page, visitor), job.job_id)
    page.studio.delete(owner(page, visitor), job.job_id)
    assert "Write a prompt and press Generate" in str(shown(page, visitor, job.job_id)["job_card"])


def test_presets_stay_within_the_limits(redis: Redis, settings: Settings) -> None:
    """On a host whose limits are below a preset's, the preset asks for the limit instead."""
    lower = replace(settings, limits=replace(settings.limits, max_num_inference_steps=50, max_num_frames=85))
    with gr.Blocks() as blocks:
        page = StudioPage(Studio(redis, lower), blocks)
    assert page.apply_preset("Draft") == (24, 31)  # within both limits: as the preset says
    assert page.apply_preset("Standard") == (50, 85)  # 64 steps: held to 50
    assert page.apply_preset("Final") == (50, 85)  # 100 steps and 163 frames: held to both limits


def test_presets_and_shapes_set_the_form_and_say_what_they_cost(page: StudioPage, visitor: gr.Request) -> None:
    assert page.apply_aspect("Portrait 480x848") == (480, 848)
    assert page.apply_preset(None) == (gr.skip(), gr.skip())  # a remix left no preset chosen: nothing changes
    labels = [label for label, _ in page.preset_costs(visitor, *form_values(prompt="")).choices]
    assert [label.split(" · ")[0] for label in labels] == ["Draft", "Standard", "Final"]
    assert all(" · about " in label for label in labels), labels


def test_remix_chooses_the_preset_and_shape_its_job_matches_or_none(page: StudioPage, visitor: gr.Request) -> None:
    draft = page.studio.submit(owner(page, visitor), {"prompt": "a draft", "num_inference_steps": 24, "num_frames": 31})
    small = page.studio.submit(owner(page, visitor), {"prompt": "small", **SMALL})
    drafted, smaller = page.remix(draft.job_id, visitor), page.remix(small.job_id, visitor)
    assert (drafted[page.preset], drafted[page.aspect]) == ("Draft", "Landscape 848x480")
    assert (smaller[page.preset], smaller[page.aspect]) == (None, None)
    assert set(smaller) <= set(page.filled)  # each a declared output of the event


def test_with_random_seed_ticked_the_seed_box_is_left_alone(page: StudioPage, visitor: gr.Request) -> None:
    _, seed, shown_seed, _ = page.submit_form(visitor, *form_values(prompt="a lark", **SMALL))
    assert isinstance(seed, int) and shown_seed == gr.skip()


def test_the_form_submits_each_field_under_its_name(page: StudioPage, visitor: gr.Request) -> None:
    """The form's inputs are the request's fields in order, then "Random seed"; both seed choices arrive."""
    values = {**SMALL, "prompt": "a lark", "negative_prompt": "fog", "guidance_scale": 6.5, "seed": 41, "fps": 12}
    chosen, _, _, _ = page.submit_form(visitor, *(values[name] for name in FORM_FIELDS), False)
    asked = page.studio.status(owner(page, visitor), chosen).request
    assert asked.model_dump() == {**values, "num_frames": SMALL["num_frames"]}
    random, seed, _, _ = page.submit_form(visitor, *(values[name] for name in FORM_FIELDS), True)
    assert page.studio.status(owner(page, visitor), random).request.seed == seed


def test_remix_returns_the_jobs_parameters_for_the_form(page: StudioPage, visitor: gr.Request) -> None:
    job = page.studio.submit(owner(page, visitor), {"prompt": "a heron", **SMALL, "num_frames": 30, "seed": 9})
    remixed = page.remix(job.job_id, visitor)
    assert [remixed[component] for component in page.inputs] == ["a heron", "", 31, 96, 160, 4, 4.5, 9, 30, False]
    with pytest.raises(gr.Error, match="no job with id"):
        page.remix("not-a-job", visitor)


def test_a_visitor_who_can_act_for_nobody_sees_how_to_sign_in(page: StudioPage) -> None:
    stranger = gr.Request(headers={"authorization": "Bearer mochi_not_a_key"})
    changed = shown(page, stranger, None)
    assert list(changed) == ["job_card"]  # the rest of the page stays as it was
    assert "That API key is not valid" in str(changed["job_card"])
    assert "Signed in as" not in page.who_is_it(stranger)


def test_a_dropped_mp4_fills_the_form_with_its_request_and_is_not_kept(page: StudioPage, tmp_path: Path) -> None:
    made = GenerationRequest(prompt="a heron; at = dawn", negative_prompt="fog", num_frames=31, seed=9, width=160)
    record = completed_record("someone", made, time.time())
    dropped = tmp_path / "dropped.mp4"
    write_mp4(np.zeros((7, 64, 64, 3), np.uint8), dropped, 24, comment=json.dumps(provenance(record, {})))
    shown = page.reproduce(str(dropped))
    assert [shown[component] for component in page.inputs] == [
        "a heron; at = dawn",
        "fog",
        31,
        480,
        160,
        64,
        4.5,
        9,
        30,
        False,
    ]
    assert shown[page.reproduce_file] is None and not dropped.exists()
    assert set(shown) <= {*page.filled, page.reproduce_file}  # each a declared output of the upload event

    plain = tmp_path / "plain.mp4"
    write_mp4(np.zeros((7, 64, 64, 3), np.uint8), plain, 24)
    with pytest.raises(gr.Error, match="this video carries no studio record"):
        page.reproduce(str(plain))
    assert not plain.exists()


def form_values(**changes: object) -> list[object]:
    """The form's values in `page.inputs` order: the request's defaults with `changes`, then "Random seed"."""
    values = {name: field.default for name, field in GenerationRequest.model_fields.items()} | changes
    return [*(values[name] for name in FORM_FIELDS), True]


def test_the_form_shows_its_cost_start_and_balance_before_generate(page: StudioPage, visitor: gr.Request) -> None:
    page.studio.queue.budgets.set_daily(owner(page, visitor), 600)
    small = page.quote_line(4, visitor, *form_values(prompt="", **SMALL))
    big = page.quote_line(4, visitor, *form_values(prompt="a fox", num_inference_steps=100, num_frames=163))
    assert small.startswith("About ") and "on the GPU; it starts once a worker is running." in small
    assert "600 of your 600 GPU-seconds a day left." in small
    assert big.startswith("**Over your budget:**")
    assert page.quote_line(4, visitor, *form_values(prompt="a fox", height=1000)).startswith("Height must be")


def marked(page: StudioPage, shown: dict[Any, Any]) -> list[str]:
    """The names of the form's fields an update marks as refused."""
    return [name for name, field in page.fields.items() if "invalid" in shown[field]["elem_classes"]]


def test_the_field_a_request_is_refused_for_is_the_one_marked(page: StudioPage, visitor: gr.Request) -> None:
    assert marked(page, page.quote_form(4, visitor, *form_values(prompt="a fox", height=1000))) == ["height"]
    assert marked(page, page.quote_form(4, visitor, *form_values(prompt="", seed=2**33))) == ["seed"]  # empty: not yet
    assert marked(page, page.quote_form(4, visitor, *form_values(prompt="a fox"))) == []
    assert marked(page, page.mark_form(*form_values(prompt=" ", width=1000))) == ["prompt", "width"]  # on Generate
    assert marked(page, page.mark_form(*form_values(prompt="a fox"))) == []


def test_sizes_and_frames_snap_to_what_mochi_renders_and_say_so(page: StudioPage) -> None:
    snap_height = page.side_snapper("height", page.limits.max_height_px)
    assert snap_height(480) == gr.skip() and snap_height(1000) == 992
    assert snap_height(1272) == 1280 and snap_height(70) == 64
    assert page.snap_frames(49) == gr.skip() and page.snap_frames(50) == 49 and page.snap_frames(52) == 55
    assert page.snap_frames(163) == gr.skip()


def test_the_page_and_the_readme_share_one_title(redis: Redis, settings: Settings) -> None:
    readme = (REPO / "README.md").read_text()
    assert f"\ntitle: {TITLE}\n" in readme and f"\n# {TITLE}\n" in readme  # the Space's card, and its heading
    assert build_ui(Studio(redis, settings)).title == TITLE  # the API docs' too: web.create_app


def test_a_sweep_fills_the_contact_sheet_and_make_final_keeps_the_seed(page: StudioPage, visitor: gr.Request) -> None:
    assert shown(page, visitor, None)["sheet.box"].visible is False  # type: ignore[attr-defined]
    batch_id, first, _ = page.submit_sweep(3, visitor, *form_values(prompt="a kite", **SMALL, seed=70)[:-1], False)
    sheet = shown(page, visitor, first, batch_id=batch_id)
    assert sheet["sheet.box"].visible is True and sheet["sheet.cancel"].visible is True  # type: ignore[attr-defined]
    jobs = page.studio.batch(owner(page, visitor), batch_id).jobs
    assert [sheet[f"sheet{index}.job_id"] for index in range(3)] == [job.job_id for job in jobs]
    assert [job.request.seed for job in jobs] == [70, 71, 72] and jobs[0].job_id == first
    assert "Seed 71" in str(sheet["sheet1.caption"]) and sheet["sheet3.job_id"] == ""
    assert "3 seeds, 0 of 3 done" in str(sheet["sheet.heading"])

    final = page.final_of_tile(jobs[1].job_id, visitor)
    asked = page.studio.status(owner(page, visitor), final).request
    assert (asked.seed, asked.num_inference_steps, asked.num_frames) == (71, 100, SMALL["num_frames"])
    page.cancel_sweep(batch_id, visitor)
    ended = shown(page, visitor, final, batch_id=batch_id)
    assert ended["sheet.cancel"].visible is False and "all ended" in str(ended["sheet.heading"])  # type: ignore[attr-defined]
    assert page.studio.status(owner(page, visitor), final).status == "PENDING"  # the final is not the sweep's

    _, stranger_key = page.studio.accounts.create(f"ui-{uuid.uuid4().hex[:8]}")
    stranger = gr.Request(headers={"authorization": f"Bearer {stranger_key}"}, client={"host": "127.0.0.1"})
    assert shown(page, stranger, None, batch_id=batch_id)["sheet.box"].visible is False  # type: ignore[attr-defined]
    with pytest.raises(gr.Error, match="no job with id"):
        page.final_of_tile(jobs[1].job_id, stranger)


def test_opening_any_job_of_a_sweep_brings_its_contact_sheet_back(page: StudioPage, visitor: gr.Request) -> None:
    batch_id, _, _ = page.submit_sweep(2, visitor, *form_values(prompt="a kite", **SMALL))
    second = page.studio.batch(owner(page, visitor), batch_id).jobs[1].job_id
    assert page.open_job(second, visitor) == (second, batch_id)
    single = page.studio.submit(owner(page, visitor), {"prompt": "alone", **SMALL}).job_id
    assert page.open_job(single, visitor) == (single, gr.skip())  # the sheet shown stays
    assert page.open_job(str(uuid.uuid4()), visitor)[1] == gr.skip()  # gone meanwhile: the refresh drops it


def test_the_sweep_button_says_what_the_sweep_would_cost(page: StudioPage, visitor: gr.Request) -> None:
    one = page.quote_line(4, visitor, *form_values(prompt="", **SMALL))
    four = page.quote_form(4, visitor, *form_values(prompt="", **SMALL))[page.sweep].value
    assert four.startswith("Sweep 4 seeds · about ") and one.startswith("About ")
    assert page.quote_form(3, visitor, *form_values(prompt="", height=1000))[page.sweep].value == "Sweep 3 seeds"


def test_random_seed_sweeps_draw_their_own_seeds(page: StudioPage, visitor: gr.Request) -> None:
    batch_id, _, _ = page.submit_sweep(2, visitor, *form_values(prompt="a kite", **SMALL, seed=70))
    seeds = page.studio.batch(owner(page, visitor), batch_id).seeds
    assert len(set(seeds)) == 2 and seeds != [70, 71]
