"""A running job's live preview: the latent-to-RGB projection, and what the renderer hands it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mochi_app.previews import LATENT_RGB_BIAS, PREVIEW_SCALE, latent_rgb, preview_webp


def test_a_latent_of_zeros_is_the_projections_bias_colour() -> None:
    rgb = latent_rgb(np.zeros((12, 4, 6), np.float32))
    assert rgb.shape == (4, 6, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == np.rint((LATENT_RGB_BIAS + 1) * 127.5).astype(int).tolist()  # [115, 109, 109]


def test_channel_7_carries_the_brightness_and_the_colours_stay_in_range() -> None:
    bright, dark = np.zeros((12, 2, 2), np.float32), np.zeros((12, 2, 2), np.float32)
    bright[7], dark[7] = 1.0, -1.0
    assert latent_rgb(bright).min() > latent_rgb(dark).max()  # 0.53, 0.52, 0.39 of the one channel
    assert latent_rgb(np.full((12, 2, 2), 100.0, np.float32)).max() == 255  # clipped, never wrapped round


def test_a_preview_is_a_webp_half_the_videos_size() -> None:
    latent = np.random.default_rng(0).standard_normal((12, 60, 106)).astype(np.float32)  # 480 x 848
    with Image.open(io.BytesIO(preview_webp(latent))) as image:
        assert (image.format, image.size) == ("WEBP", (106 * PREVIEW_SCALE, 60 * PREVIEW_SCALE))


def test_a_latent_of_the_wrong_shape_is_refused_with_its_shape() -> None:
    with pytest.raises(ValueError, match=r"must have shape \(12, height, width\), got \(16, 4, 4\)"):
        latent_rgb(np.zeros((16, 4, 4), np.float32))
