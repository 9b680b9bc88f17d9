"""The worker's fast path: speed-ups applied to a loaded Mochi pipeline, each one switchable.

The attention processors and compiled blocks leave the output as it was (within rounding); the step
cache skips work and so changes it, which is why it is off unless asked for.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mochi_app.config import Attention

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FastPath:
    """Which speed-ups to apply; `FastPath(attention="diffusers")` is the reference recipe's transformer."""

    attention: Attention = "prefix"
    compile_blocks: bool = False
    step_cache_threshold: float = 0.0  # diffusers' FirstBlockCache; 0 leaves it off

    def describe(self) -> str:
        parts = [
            name
            for name, on in (
                (f"{self.attention} attention", self.attention != "diffusers"),
                ("compiled blocks", self.compile_blocks),
                (f"step cache {self.step_cache_threshold:g}", self.step_cache_threshold > 0),
            )
            if on
        ]
        return ", ".join(parts) or "none"


class BatchedMochiAttnProcessor:
    """Mochi's joint attention in one masked call for the whole batch, without a host sync (`masked`).

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
        query, key, value = _joint_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        output = masked_attention(query, key, value, attention_mask)
        return _project_out(attn, output, hidden_states.size(1))


def masked_attention(query: Any, key: Any, value: Any, attention_mask: Any) -> Any:
    """The `masked` attention core on joint (batch, tokens, heads, head_dim) tensors; padded prompt slots
    (False in the (batch, prompt slots) mask) are no one's keys and come out zero."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention

    batch_size, tokens = query.shape[:2]
    video_tokens = torch.ones(batch_size, tokens - attention_mask.size(1), dtype=torch.bool, device=query.device)
    kept = torch.cat([video_tokens, attention_mask.to(torch.bool)], dim=1)
    query, key, value = (x.transpose(1, 2) for x in (query, key, value))
    output = scaled_dot_product_attention(query, key, value, attn_mask=kept[:, None, None, :])
    return (output * kept[:, None, :, None].to(output.dtype)).transpose(1, 2)


class PrefixMochiAttnProcessor:
    """Mochi's joint attention over each prompt's real tokens only, with no mask and no host sync (`prefix`).

    The renderer knows each prompt's real length before the pipeline runs and sets `text_lengths` (a CPU
    tensor, in the batch's order) through `text_lengths(pipe, ...)`. T5 pads on the right, so sample i's
    real tokens are the first `video + text_lengths[i]` of the joint sequence: plain SDPA runs on that
    prefix, a view, so any fused kernel may take it. The lengths reach the compiled graph as a tensor, so
    a new prompt length needs no new graph, and the attention core is one opaque op inside it.
    """

    def __init__(self) -> None:
        self.text_lengths: Any = None
        self._attend = _prefix_attention_op()  # looked up here: a compiled graph must not trace the registration

    def __call__(
        self,
        attn: Any,
        hidden_states: Any,
        encoder_hidden_states: Any,
        attention_mask: Any,
        image_rotary_emb: tuple[Any, Any] | None = None,
    ) -> tuple[Any, Any]:
        if self.text_lengths is None:
            raise ValueError(
                "prefix attention needs each prompt's real token count: run the pipeline inside "
                "fast_path.text_lengths(pipe, lengths), as MochiRenderer does"
            )
        query, key, value = _joint_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        sequence_length = hidden_states.size(1)
        output = self._attend(query, key, value, self.text_lengths, sequence_length)
        return _project_out(attn, output, sequence_length)


@functools.cache
def _prefix_attention_op() -> Any:
    """`mochi_app::prefix_attention`, registered with torch once, on first use (not at import)."""
    import torch
    from torch.nn.functional import scaled_dot_product_attention

    @torch.library.custom_op(
        "mochi_app::prefix_attention",
        mutates_args=(),
        schema="(Tensor query, Tensor key, Tensor value, Tensor text_lengths, SymInt video_tokens) -> Tensor",
    )
    def prefix_attention(query: Any, key: Any, value: Any, text_lengths: Any, video_tokens: int) -> Any:
        """(batch, video + text slots, heads, head_dim) in and out; padded prompt slots come out zero."""
        text_slots = query.size(1) - video_tokens
        lengths = text_lengths.tolist()  # host memory: no device sync
        if len(lengths) != query.size(0) or not all(0 <= n <= text_slots for n in lengths):
            raise ValueError(
                f"text_lengths {lengths} do not fit a batch of {query.size(0)} with {text_slots} prompt slots"
            )
        output = query.new_empty(query.shape)
        for index, length in enumerate(lengths):
            end = video_tokens + length
            views = (x[index : index + 1, :end].transpose(1, 2) for x in (query, key, value))
            output[index : index + 1, :end] = scaled_dot_product_attention(*views).transpose(1, 2)
            output[index, end:] = 0
        return output

    @prefix_attention.register_fake
    def _(query: Any, key: Any, value: Any, text_lengths: Any, video_tokens: int) -> Any:
        return query.new_empty(query.shape)

    return prefix_attention


def prefix_attention(query: Any, key: Any, value: Any, text_lengths: Any, video_tokens: int) -> Any:
    """The `prefix` attention core on joint (batch, tokens, heads, head_dim) tensors, for benchmarks."""
    return _prefix_attention_op()(query, key, value, text_lengths, video_tokens)


@contextmanager
def text_lengths(pipe: Any, lengths: Sequence[int]) -> Iterator[None]:
    """Tell the prefix processors each prompt's real token count (batch order) for the calls inside."""
    import torch

    processors = [
        block.attn1.processor
        for block in pipe.transformer.transformer_blocks
        if isinstance(block.attn1.processor, PrefixMochiAttnProcessor)
    ]
    lengths_tensor = torch.tensor(list(lengths), dtype=torch.int64)  # stays on the CPU: read without a sync
    for processor in processors:
        processor.text_lengths = lengths_tensor
    try:
        yield
    finally:
        for processor in processors:
            processor.text_lengths = None  # stale lengths would be silently wrong for the next prompts


def _joint_qkv(
    attn: Any, hidden_states: Any, encoder_hidden_states: Any, image_rotary_emb: tuple[Any, Any] | None
) -> list[Any]:
    """Query, key and value of video then prompt tokens, (batch, tokens, heads, head_dim), as the reference."""
    import torch

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
    return [torch.cat(pair, dim=1) for pair in ((query, encoder_query), (key, encoder_key), (value, encoder_value))]


def _project_out(attn: Any, output: Any, sequence_length: int) -> tuple[Any, Any]:
    """(batch, tokens, heads, head_dim) attention output split into video and prompt, and projected out."""
    output = output.flatten(2, 3)
    hidden_states, encoder_hidden_states = output.split_with_sizes(
        (sequence_length, output.size(1) - sequence_length), dim=1
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
    for block in transformer.transformer_blocks:
        block.attn1.processor = _processor(fast_path.attention)
    if fast_path.step_cache_threshold > 0:
        from diffusers.hooks import FirstBlockCacheConfig

        transformer.enable_cache(FirstBlockCacheConfig(threshold=fast_path.step_cache_threshold))
    if fast_path.compile_blocks:
        compile_blocks(pipe)
    log.info("fast path: %s", fast_path.describe())


def compile_blocks(pipe: Any, backend: Any = "inductor") -> None:
    """torch.compile each transformer block, for any size (`dynamic`); a test may pass a counting backend.

    diffusers' compile_repeated_blocks refuses Mochi, so the blocks are compiled one by one. They share
    one graph (their weights are its inputs), so the first block compiles for all; the last block, which
    has no prompt output, gets one of its own.
    """
    import torch

    # Graphs compiled before (for another processor, say) would count towards dynamo's recompile limit, past
    # which it runs the blocks eagerly without a word.
    torch._dynamo.reset()
    for block in pipe.transformer.transformer_blocks:
        block.compile(dynamic=True, backend=backend)


def installed_fast_path(pipe: Any) -> FastPath:
    """The fast path `pipe` really runs now, read off its blocks (after a warm-up may have undone compiling)."""
    transformer = pipe.transformer
    blocks = transformer.transformer_blocks
    kinds = {_attention_of(block.attn1.processor) for block in blocks}
    if len(kinds) != 1:
        raise ValueError(f"the blocks run different attention processors: {sorted(kinds)}")
    cache = transformer._cache_config  # diffusers' CacheMixin: None when no cache is on
    return FastPath(
        attention=kinds.pop(),
        compile_blocks=all(block._compiled_call_impl is not None for block in blocks),
        step_cache_threshold=float(getattr(cache, "threshold", 0.0)),
    )


def _processor(attention: Attention) -> Any:
    if attention == "prefix":
        return PrefixMochiAttnProcessor()
    if attention == "masked":
        return BatchedMochiAttnProcessor()
    from diffusers.models.attention_processor import MochiAttnProcessor2_0

    return MochiAttnProcessor2_0()


def _attention_of(processor: Any) -> Attention:
    if isinstance(processor, PrefixMochiAttnProcessor):
        return "prefix"
    if isinstance(processor, BatchedMochiAttnProcessor):
        return "masked"
    if type(processor).__name__ == "MochiAttnProcessor2_0":
        return "diffusers"
    raise ValueError(f"not one of our attention processors: {type(processor).__name__}")


def remove_fast_path(pipe: Any) -> None:
    """Undo `apply_fast_path`: the transformer runs as diffusers built it."""
    transformer = pipe.transformer
    uncompile_blocks(pipe)
    if transformer.is_cache_enabled:
        transformer.disable_cache()
    for block in transformer.transformer_blocks:
        block.attn1.processor = _processor("diffusers")


def uncompile_blocks(pipe: Any) -> None:
    """Undo `compile_blocks`: the blocks run eagerly again."""
    for block in pipe.transformer.transformer_blocks:
        block._compiled_call_impl = None  # what nn.Module.compile() set
