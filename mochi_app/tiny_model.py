"""Builds the tiny random-weight Mochi pipeline: the real classes, small sizes, no download."""

from __future__ import annotations

import logging
import os
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TINY_MODEL_DIRNAME = "tiny-mochi-v1"  # bump the suffix when the architecture below changes
TINY_SEED = 0
SPACE = "\u2581"  # SentencePiece's word-boundary marker, as in T5's own vocabulary
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
COMMON_WORDS = """
a an the of and or in on at to from with by for over under near into through across above below
is are was be being very slowly quickly gently softly bright dark red orange yellow green blue purple
white black golden silver cat dog bird fish horse fox bear rabbit child man woman people hand face
tree forest flower grass river ocean sea lake beach sand wave mountain hill sky cloud sun moon star
rain snow fog wind fire light shadow city street car train boat house room window door table bowl
cup lemon apple walks runs flies swims jumps dances falls rises turns looks sits stands holds plays
camera shot close up wide view slow motion cinematic scene background foreground warm cold soft
""".split()  # noqa: SIM905 - a paragraph of words reads better than 130 quoted items


def build_tiny_tokenizer() -> Any:
    """A T5-style Unigram tokenizer (`tokenizers.Tokenizer`), made locally and deterministically."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = [(token, 0.0) for token in SPECIAL_TOKENS]
    vocab.append((SPACE, -2.0))
    vocab += [(char, -5.0) for char in string.ascii_letters + string.digits + string.punctuation]
    vocab += [(SPACE + word, -1.0) for word in dict.fromkeys(COMMON_WORDS)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=SPECIAL_TOKENS.index("<unk>"), byte_fallback=False))
    # The same pre-tokenizer and decoder transformers' T5Tokenizer installs, so that counting with this
    # object alone (in the web process, without torch) matches what the pipeline's tokenizer does.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    eos_id = SPECIAL_TOKENS.index("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
    )
    return tokenizer


def ensure_tiny_model(models_dir: Path) -> Path:
    """The tiny pipeline's folder under `models_dir`, built and saved there on first use."""
    target = models_dir / TINY_MODEL_DIRNAME
    if (target / "model_index.json").exists():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{TINY_MODEL_DIRNAME}-", dir=models_dir))
    try:
        build_tiny_pipeline().save_pretrained(staging)
        # A rename is atomic: two workers starting together never see half a model.
        os.rename(staging, target)
        log.info("built the tiny random-weight Mochi model at %s", target)
    except OSError:
        if not (target / "model_index.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


TEXT_EMBED_DIM = 32  # the tiny T5's d_model, which the transformer's text projection takes in


def tiny_text_encoder(vocab_size: int) -> Any:
    """A tiny random-weight `T5EncoderModel` for a tokenizer of `vocab_size` ids (pad 0, eos 1, as in T5)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=TEXT_EMBED_DIM,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu",
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )


def tiny_transformer() -> Any:
    """A tiny random-weight `MochiTransformer3DModel` taking the tiny text encoder's embeddings."""
    from diffusers import MochiTransformer3DModel

    return MochiTransformer3DModel(
        patch_size=2,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        pooled_projection_dim=16,
        in_channels=12,
        text_embed_dim=TEXT_EMBED_DIM,
        time_embed_dim=4,
        max_sequence_length=256,
    )


def tiny_vae() -> Any:
    """A tiny random-weight `AutoencoderKLMochi`: the real VAE's 6x temporal, 8x spatial compression."""
    from diffusers import AutoencoderKLMochi

    # Far fewer channels than the real VAE, but as many blocks, so the same compression.
    return AutoencoderKLMochi(
        latent_channels=12,
        out_channels=3,
        encoder_block_out_channels=(32, 32, 32, 32),
        decoder_block_out_channels=(32, 32, 32, 32),
        layers_per_block=(1, 1, 1, 1, 1),
    )


def build_tiny_pipeline() -> Any:
    """A `MochiPipeline` of the real classes with tiny random weights, the same every time."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, MochiPipeline
    from transformers import T5TokenizerFast

    tokenizer = T5TokenizerFast(tokenizer_object=build_tiny_tokenizer(), extra_ids=0)
    # One seed, then the components in this order: the weights stay those of every earlier build.
    torch.manual_seed(TINY_SEED)
    text_encoder = tiny_text_encoder(len(tokenizer))
    transformer = tiny_transformer()
    vae = tiny_vae()
    return MochiPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
