"""The worker's fast path: speed-ups applied to a loaded Mochi pipeline, each one switchable.

Batched attention and compiled blocks leave the output as it was (within bf16 rounding); the step
cache skips work and so changes it, which is why it is off unless asked for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FastPath:
    """Which speed-ups to apply; `FastPath()` is the reference recipe's transformer, untouched."""

    batched_attention: bool = False
    compile_blocks: bool = False
    step_cache_threshold: float = 0.0  # diffusers' FirstBlockCache; 0 leaves it off

    def describe(self) -> str:
        parts = [
            name
            for name, on in (
                ("batched attention", self.batched_attention),
                ("compiled blocks", self.compile_blocks),
                (f"step cache {self.step_cache_threshold:g}", self.step_cache_threshold > 0),
            )
            if on
        ]
        return ", ".join(parts) or "none"


class BatchedMochiAttnProcessor:
    """Mochi's joint attention in one call for the whole batch, without a host sync.

    diffusers' `MochiAttnProcessor2_0` loops over the batch and picks each prompt's real tokens with
    `torch.nonzero`, which waits for the GPU once per block and step, and breaks a compiled graph.
    Here every prompt position is kept and the padded ones are masked out as keys and zeroed as
    outputs, as the reference leaves them. T5 pads on the right, so the kept positions line up.
    """

    def __call__(
        self,
        attn: Any,
        hidden_states: Any,
        encoder_hidden_states: Any,
        attention_mask: Any,
        image_rotary_emb: tuple[Any, Any] | None = None,
    ) -> tuple[Any, Any]:
        import torch
        from torch.nn.functional import scaled_dot_product_attention

        # 1. Project and normalise, the same as the reference processor.
        query, key, value = _project(attn, hidden_states, (attn.to_q, attn.to_k, attn.to_v), attn.norm_q, attn.norm_k)
        encoder_query, encoder_key, encoder_value = _project(
            attn,
            encoder_hidden_states,
            (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj),
            attn.norm_added_q,
            attn.norm_added_k,
        )
        if image_rotary_emb is not None:
            query = _rotate(query, *image_rotary_emb)
            key = _rotate(key, *image_rotary_emb)

        # 2. One attention over video then prompt tokens; padded prompt tokens are no one's keys.
        batch_size, sequence_length = query.shape[:2]
        encoder_sequence_length = encoder_query.size(1)
        video_tokens = torch.ones(batch_size, sequence_length, dtype=torch.bool, device=query.device)
        kept = torch.cat([video_tokens, attention_mask.to(torch.bool)], dim=1)
        query, key, value = (
            torch.cat(pair, dim=1).transpose(1, 2)
            for pair in ((query, encoder_query), (key, encoder_key), (value, encoder_value))
        )
        output = scaled_dot_product_attention(query, key, value, attn_mask=kept[:, None, None, :])
        output = output * kept[:, None, :, None].to(output.dtype)

        # 3. Split back and project out.
        output = output.transpose(1, 2).flatten(2, 3)
        hidden_states, encoder_hidden_states = output.split_with_sizes(
            (sequence_length, encoder_sequence_length), dim=1
        )
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if hasattr(attn, "to_add_out"):
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        return hidden_states, encoder_hidden_states


def _project(attn: Any, states: Any, projections: tuple[Any, Any, Any], norm_q: Any, norm_k: Any) -> list[Any]:
    """Query, key and value as (batch, tokens, heads, head_dim), queries and keys normalised."""
    query, key, value = (projection(states).unflatten(2, (attn.heads, -1)) for projection in projections)
    return [norm_q(query) if norm_q is not None else query, norm_k(key) if norm_k is not None else key, value]


def _rotate(x: Any, freqs_cos: Any, freqs_sin: Any) -> Any:
    """Mochi's rotary embedding on interleaved pairs, in float32 as the reference does."""
    import torch

    x_even, x_odd = x[..., 0::2].float(), x[..., 1::2].float()
    cos = (x_even * freqs_cos - x_odd * freqs_sin).to(x.dtype)
    sin = (x_even * freqs_sin + x_odd * freqs_cos).to(x.dtype)
    return torch.stack([cos, sin], dim=-1).flatten(-2)


def apply_fast_path(pipe: Any, fast_path: FastPath) -> None:
    """Apply `fast_path` to a loaded `MochiPipeline`'s transformer, in place, before its first call."""
    transformer = pipe.transformer
    if fast_path.batched_attention:
        for block in transformer.transformer_blocks:
            block.attn1.processor = BatchedMochiAttnProcessor()
    if fast_path.step_cache_threshold > 0:
        from diffusers.hooks import FirstBlockCacheConfig

        transformer.enable_cache(FirstBlockCacheConfig(threshold=fast_path.step_cache_threshold))
    if fast_path.compile_blocks:
        # diffusers' compile_repeated_blocks refuses Mochi, so compile the blocks one by one. They
        # share one graph (their weights are its inputs), so the first block compiles for all.
        for block in transformer.transformer_blocks:
            block.compile(dynamic=True)
    log.info("fast path: %s", fast_path.describe())


def remove_fast_path(pipe: Any) -> None:
    """Undo `apply_fast_path`: the transformer runs as diffusers built it."""
    from diffusers.models.attention_processor import MochiAttnProcessor2_0

    transformer = pipe.transformer
    uncompile_blocks(pipe)
    if transformer.is_cache_enabled:
        transformer.disable_cache()
    for block in transformer.transformer_blocks:
        block.attn1.processor = MochiAttnProcessor2_0()


def uncompile_blocks(pipe: Any) -> None:
    """Undo `compile_blocks`: the blocks run eagerly again."""
    for block in pipe.transformer.transformer_blocks:
        block._compiled_call_impl = None  # what nn.Module.compile() set
