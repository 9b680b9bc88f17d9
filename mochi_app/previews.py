"""A running job's live preview: one latent frame turned into a small RGB image by a linear projection, no VAE."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Mochi 1's latent space to RGB: pixel = latent · factors + bias, then [-1, 1] to [0, 255]. The published fit
# from ComfyUI's comfy/latent_formats.py (class Mochi), for the normalized latents the denoiser works on.
LATENT_RGB_FACTORS = np.array(
    [
        [-0.0069, -0.0045, 0.0018],
        [0.0154, -0.0692, -0.0274],
        [0.0333, 0.0019, 0.0206],
        [-0.1390, 0.0628, 0.1678],
        [-0.0725, 0.0134, -0.1898],
        [0.0074, -0.0270, -0.0209],
        [-0.0176, -0.0277, -0.0221],
        [0.5294, 0.5204, 0.3852],
        [-0.0326, -0.0446, -0.0143],
        [-0.0659, 0.0153, -0.0153],
        [0.0185, -0.0217, 0.0014],
        [-0.0396, -0.0495, -0.0281],
    ],
    dtype=np.float32,
)
LATENT_RGB_BIAS = np.array([-0.0940, -0.1418, -0.1453], dtype=np.float32)
LATENT_CHANNELS = 12
PREVIEW_SCALE = 4  # a latent pixel is 8x8 video pixels: the preview is half the video's width and height
PREVIEW_QUALITY = 70


def latent_rgb(latent_frame: np.ndarray) -> np.ndarray:
    """8-bit RGB of shape (height, width, 3) from one latent frame of shape (12, height, width)."""
    if latent_frame.ndim != 3 or latent_frame.shape[0] != LATENT_CHANNELS:
        raise ValueError(f"a latent frame must have shape (12, height, width), got {latent_frame.shape}")
    rgb: np.ndarray = np.einsum("chw,cr->hwr", latent_frame.astype(np.float32), LATENT_RGB_FACTORS)
    scaled: np.ndarray = np.rint((rgb + LATENT_RGB_BIAS + 1) * 127.5)
    return scaled.clip(0, 255).astype(np.uint8)


def preview_webp(latent_frame: np.ndarray) -> bytes:
    """The preview as WebP, `PREVIEW_SCALE` times the latent frame's size."""
    image = Image.fromarray(latent_rgb(latent_frame))
    image = image.resize((image.width * PREVIEW_SCALE, image.height * PREVIEW_SCALE), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="WEBP", quality=PREVIEW_QUALITY)
    return out.getvalue()
