"""GenerationRequest: every rule of the parameter table, with the bad value quoted back."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mochi_app.config import Limits
from mochi_app.records import JobStatus, Timings
from mochi_app.schemas import MAX_SEED, GenerationRequest, InvalidRequest, most_tokens, snap_num_frames
from mochi_app.tokens import TokenCounter

LIMITS = Limits()
COUNT = TokenCounter.tiny()


@pytest.fixture(scope="module")
def t5_count(tmp_path_factory: pytest.TempPathFactory) -> TokenCounter:
    """T5's tokenizer as the real repo ships it (a SentencePiece unigram model, tests/hub_snapshot.py)."""
    from transformers import T5TokenizerFast

    from tests.hub_snapshot import write_tokenizer

    folder = tmp_path_factory.mktemp("t5-tokenizer")
    write_tokenizer(folder)
    return TokenCounter(T5TokenizerFast.from_pretrained(folder)._tokenizer)


def parse(**params: object) -> GenerationRequest:
    return GenerationRequest.parse({"prompt": "a cat", **params}, LIMITS, COUNT)


def error_for(**params: object) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        GenerationRequest.parse(params, LIMITS, COUNT)
    return caught.value.errors


def test_defaults_follow_the_design() -> None:
    request = parse()
    assert (request.negative_prompt, request.num_frames, request.height, request.width) == ("", 85, 480, 848)
    assert (request.num_inference_steps, request.guidance_scale, request.fps) == (64, 4.5, 30)


def test_a_missing_seed_is_drawn_and_kept() -> None:
    seeds = {parse().seed for _ in range(5)}
    assert all(seed is not None and 0 <= seed <= MAX_SEED for seed in seeds)
    assert len(seeds) > 1
    assert parse(seed=7).seed == 7


def test_prompt_is_stripped() -> None:
    assert parse(prompt="  a cat  \n").prompt == "a cat"


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "])
def test_empty_prompt_is_refused(prompt: str) -> None:
    assert error_for(prompt=prompt) == {"prompt": "prompt must not be empty"}


def test_missing_prompt_is_refused() -> None:
    assert error_for() == {"prompt": "prompt is required"}


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_text_past_the_token_limit_is_refused_not_truncated(field: str) -> None:
    text = "cat " * 300
    errors = error_for(**{"prompt": "a dog", field: text})
    assert errors[field] == f"{field} is 301 tokens long; the limit is 256. Shorten it."


def test_text_at_the_token_limit_is_accepted() -> None:
    text = " ".join(["cat"] * 255)  # 255 words + end-of-text = 256 tokens
    assert COUNT(text) == 256
    assert parse(prompt=text).prompt == text


@pytest.mark.parametrize("text", ["a\x00cat", "bell\x07", "esc\x1b[31m"])
def test_control_characters_are_refused(text: str) -> None:
    assert "control character" in error_for(prompt=text)["prompt"]


@pytest.mark.parametrize(("asked", "rendered"), [(1, 7), (7, 7), (9, 7), (10, 13), (30, 31), (85, 85), (163, 163)])
def test_num_frames_snaps_to_the_nearest_valid_count(asked: int, rendered: int) -> None:
    request = parse(num_frames=asked)
    assert request.num_frames == asked
    assert request.rendered_num_frames == rendered


@given(st.integers(min_value=1, max_value=163))
def test_snapped_frame_counts_are_valid_and_nearest(asked: int) -> None:
    snapped = snap_num_frames(asked)
    assert snapped % 6 == 1 and 7 <= snapped <= 163
    assert all(abs(snapped - asked) <= abs(k * 6 + 1 - asked) for k in range(1, 28))


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"num_frames": 0}, "num_frames", "num_frames must be between 1 and 163, got 0"),
        ({"num_frames": 200}, "num_frames", "num_frames must be between 1 and 163, got 200"),
        ({"height": 850}, "height", "height must be a multiple of 16, got 850"),
        ({"width": 100}, "width", "width must be a multiple of 16, got 100"),
        ({"height": 32}, "height", "height must be between 64 and 1280, got 32"),
        ({"width": 2048}, "width", "width must be between 64 and 1280, got 2048"),
        ({"num_inference_steps": 1}, "num_inference_steps", "num_inference_steps must be between 2 and 100, got 1"),
        ({"num_inference_steps": 101}, "num_inference_steps", "num_inference_steps must be between 2 and 100, got 101"),
        ({"guidance_scale": -0.5}, "guidance_scale", "guidance_scale must be between 0 and 20, got -0.5"),
        ({"guidance_scale": 20.5}, "guidance_scale", "guidance_scale must be between 0 and 20, got 20.5"),
        ({"seed": -1}, "seed", f"seed must be between 0 and {MAX_SEED}, got -1"),
        ({"seed": 2**32}, "seed", f"seed must be between 0 and {MAX_SEED}, got {2**32}"),
        ({"fps": 0}, "fps", "fps must be between 1 and 60, got 0"),
    ],
)
def test_out_of_range_values_are_refused_with_the_value_quoted(
    params: dict[str, object], field: str, message: str
) -> None:
    assert error_for(prompt="a cat", **params) == {field: message}


@pytest.mark.parametrize(
    ("params", "field", "quoted"),
    [
        ({"num_frames": "85"}, "num_frames", "'85'"),
        ({"height": 480.0}, "height", "480.0"),
        ({"seed": True}, "seed", "True"),
        ({"prompt": 5}, "prompt", "5"),
        ({"guidance_scale": math.nan}, "guidance_scale", "nan"),
        ({"guidance_scale": math.inf}, "guidance_scale", "inf"),
    ],
)
def test_wrong_types_are_refused_with_the_value_quoted(params: dict[str, object], field: str, quoted: str) -> None:
    message = error_for(**{"prompt": "a cat", **params})[field]
    assert message.startswith(f"{field}: ") and message.endswith(f"got {quoted}")


def test_unknown_fields_are_refused() -> None:
    assert error_for(prompt="a cat", steps=4) == {"steps": "steps is not a known parameter"}


def test_every_bad_field_is_reported_at_once() -> None:
    assert set(error_for(prompt="", height=850, seed=-1)) == {"prompt", "height", "seed"}


def test_limits_come_from_settings() -> None:
    strict = Limits(max_num_inference_steps=8)
    with pytest.raises(InvalidRequest, match="between 2 and 8, got 9"):
        GenerationRequest.parse({"prompt": "a cat", "num_inference_steps": 9}, strict, COUNT)


def test_terminal_states() -> None:
    assert {status for status in JobStatus if status.is_terminal} == {"COMPLETED", "FAILED", "CANCELLED"}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
FIELDS = list(GenerationRequest.model_fields)


@given(
    st.dictionaries(st.sampled_from([*FIELDS, "steps", ""]), JSON_VALUES, max_size=len(FIELDS))
    | st.fixed_dictionaries({"prompt": st.text(max_size=300)}, optional={f: JSON_VALUES for f in FIELDS[1:]})
)
@settings(max_examples=300, deadline=None)
def test_any_input_is_either_a_valid_request_or_named_errors(data: dict[str, object]) -> None:
    """Whatever arrives, parse returns a request that keeps every rule, or InvalidRequest naming fields."""
    try:
        request = GenerationRequest.parse(data, LIMITS, COUNT)
    except InvalidRequest as exc:
        assert exc.errors and all(isinstance(message, str) and message for message in exc.errors.values())
        assert set(exc.errors) <= {*FIELDS, "steps", ""}
        return
    assert request.prompt == request.prompt.strip() and request.prompt
    assert COUNT(request.prompt) <= LIMITS.max_prompt_tokens
    assert 1 <= request.num_frames <= LIMITS.max_num_frames
    assert request.rendered_num_frames % 6 == 1
    assert request.height % 16 == 0 and request.width % 16 == 0
    assert LIMITS.min_side_px <= min(request.height, request.width)
    assert 2 <= request.num_inference_steps <= LIMITS.max_num_inference_steps
    assert 0 <= request.guidance_scale <= 20 and math.isfinite(request.guidance_scale)
    assert request.seed is not None and 0 <= request.seed <= 2**32 - 1
    assert 1 <= request.fps <= LIMITS.max_fps


def test_a_request_no_gpu_could_finish_in_the_time_limit_is_refused_with_what_fits() -> None:
    # 163 frames at 1280x1280 with 100 steps: 179,200 video tokens, about 3 h on an H100 at 400 TFLOP/s.
    errors = error_for(prompt="a cat", num_frames=163, height=1280, width=1280, num_inference_steps=100)
    assert errors == {
        "request": "this request needs about 3.1 h of GPU time (163 frames at 1280x1280, 100 steps), but a job may "
        "run for at most 1.0 h: try up to 79 frames at 1280x1280 with 100 steps or up to 31 steps for 163 frames "
        "at 1280x1280"
    }
    suggested = [
        parse(num_frames=79, height=1280, width=1280, num_inference_steps=100),
        parse(num_frames=163, height=1280, width=1280, num_inference_steps=31),
    ]
    assert [request.rendered_num_frames for request in suggested] == [79, 163]
    with pytest.raises(InvalidRequest):
        parse(num_frames=85, height=1280, width=1280, num_inference_steps=100)


def test_the_work_bound_follows_the_time_limit_and_the_gpu() -> None:
    big = {"prompt": "a cat", "num_frames": 163, "height": 1280, "width": 1280, "num_inference_steps": 100}
    assert GenerationRequest.parse(big, Limits(max_render_s=4 * 3600), COUNT).height == 1280
    assert GenerationRequest.parse(big, Limits(gpu_tflops=1600), COUNT).height == 1280
    # Without guidance the unconditional pass is skipped: half the work.
    assert GenerationRequest.parse({**big, "guidance_scale": 1.0}, Limits(max_render_s=6000), COUNT).width == 1280
    with pytest.raises(InvalidRequest):
        GenerationRequest.parse(big, Limits(max_render_s=6000), COUNT)


def test_the_page_defaults_and_the_largest_default_size_fit() -> None:
    assert parse().num_frames == 85
    assert parse(num_frames=163, num_inference_steps=100).num_frames == 163  # 848x480, about 17 min


def no_tokenizer_yet(text: str) -> int | None:
    return None  # what the web's counter says before any worker has published its tokenizer


def test_before_the_tokenizer_is_known_a_prompt_is_held_to_a_byte_bound() -> None:
    short = "a red fox trots through fresh snow at dawn"
    assert GenerationRequest.parse({"prompt": short}, LIMITS, no_tokenizer_yet).prompt == short
    at_bound = "a" * (LIMITS.max_prompt_tokens - 2)
    assert GenerationRequest.parse({"prompt": at_bound}, LIMITS, no_tokenizer_yet).prompt == at_bound
    for text in [at_bound + "a", "x" * 60_000, "ﷺ" * 20]:  # the last is 20 characters, 360 once NFKC-normalized
        with pytest.raises(InvalidRequest) as caught:
            GenerationRequest.parse({"prompt": "a cat", "negative_prompt": text}, LIMITS, no_tokenizer_yet)
        assert "until the model's tokenizer is known" in caught.value.errors["negative_prompt"]
        assert "the limit is 254 bytes" in caught.value.errors["negative_prompt"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=80) | st.sampled_from(["ﷺ", "ﬃ", "㎒", "😀 .", " . , ! ?", "日本語", "\u0301" * 5]))
def test_the_byte_bound_is_never_below_what_a_tokenizer_makes(t5_count: TokenCounter, text: str) -> None:
    assert COUNT(text) <= most_tokens(text)
    assert t5_count(text) <= most_tokens(text)


def test_timings_stored_before_load_s_was_dropped_still_read() -> None:
    """Records written by an older version carry `load_s` (always 0.0); they must still load, without it."""
    timings = Timings.model_validate_json('{"queue_wait_s": 1.5, "load_s": 0.0, "denoise_s": 2.0}')
    assert (timings.queue_wait_s, timings.denoise_s) == (1.5, 2.0)
    assert "load_s" not in timings.model_dump()
