"""A KV cache of rows ("slots"), one per running sequence, and the attention function that reads it.

Every layer keeps one K and one V tensor shaped ``[rows, kv_heads, capacity + 1, head_dim]``. A sequence owns
a row for as long as it runs; its tokens sit at positions ``0 .. length-1`` of that row. A forward pass works
on a contiguous range of rows, so the attention reads a view of the cache (no copy per step), and each row
attends only to its own positions through a boolean mask built once per forward. The last column is a trash
slot: padding tokens write their keys there, never over a real position, and no view ever includes it.

The model's own attention modules call :func:`slot_attention` (registered with transformers'
``AttentionInterface``) with the keys and values of the tokens being run, already rotated; what rows and
positions they belong to comes from the :class:`Batch` the runner sets on this thread before the forward.
This works for any transformers model that uses the attention interface (Llama, Qwen, Gemma, ...), sliding
windows included.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["ATTENTION_NAME", "Batch", "SlotCache", "slot_attention"]

ATTENTION_NAME = "infergate_slots"

_current = threading.local()


@dataclass
class Batch:
    """Where the tokens of one forward go: rows ``first .. first+rows-1``, ``width`` tokens each.

    ``write_pos`` ([rows, width]) is each token's position in its row (the trash column for padding);
    ``length`` is how far the view reaches (the longest row after this forward).
    """

    first: int
    rows: int
    width: int
    write_pos: torch.Tensor
    abs_pos: torch.Tensor  # [rows, width]: each query's own position (-1 for padding)
    length: int
    _masks: dict[int | None, torch.Tensor] | None = None

    def mask(self, window: int | None) -> torch.Tensor:
        """[rows, 1, width, length] bool: a query sees its row's positions up to its own (within a window)."""
        if self._masks is None:
            self._masks = {}
        found = self._masks.get(window)
        if found is None:
            keys = torch.arange(self.length, device=self.abs_pos.device)
            q = self.abs_pos.unsqueeze(-1)  # [rows, width, 1]
            found = keys <= q
            if window is not None:
                found &= keys > q - window
            # Padding queries see position 0 only: finite output, thrown away, never NaN.
            found |= (q < 0) & (keys == 0)
            found = found.unsqueeze(1)
            self._masks[window] = found
        return found


class SlotCache:
    """K and V for every layer, grown and shrunk as a whole (rows x capacity)."""

    def __init__(self, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device: str) -> None:
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.dtype, self.device = dtype, device
        self.rows = 0
        self.capacity = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * torch.finfo(self.dtype).bits // 8

    @property
    def nbytes(self) -> int:
        return self.rows * (self.capacity + 1) * self.bytes_per_token

    def resize(self, rows: int, capacity: int, keep: int, keep_len: int) -> bool:
        """Reallocate to ``rows x capacity``, keeping the first ``keep`` rows' first ``keep_len`` positions
        (always: returns False, nothing to recompute).

        Zero-filled: masked positions must hold finite numbers, or 0 x NaN poisons the attention output.
        """
        if rows == self.rows and capacity == self.capacity:
            return False
        shape = (rows, self.kv_heads, capacity + 1, self.head_dim)
        old_k, old_v = self.k, self.v
        self.k, self.v = [], []
        for layer in range(self.layers):
            for old, fresh in ((old_k, self.k), (old_v, self.v)):
                new = torch.zeros(shape, dtype=self.dtype, device=self.device)
                if keep and keep_len and old:
                    new[:keep, :, :keep_len] = old[layer][:keep, :, :keep_len]
                fresh.append(new)
            if old_k:  # let this layer's old tensors go before the next layer's are allocated
                old_k[layer] = old_v[layer] = torch.empty(0)
        self.rows, self.capacity = rows, capacity
        return False

    def move_row(self, src: int, dst: int, length: int) -> None:
        """Copy a row's first ``length`` positions onto another row (closing a hole)."""
        self.copy_row(src, dst, length)

    def copy_row(self, src: int, dst: int, length: int) -> None:
        for layer in range(self.layers):
            self.k[layer][dst, :, :length] = self.k[layer][src, :, :length]
            self.v[layer][dst, :, :length] = self.v[layer][src, :, :length]

    def release(self, row: int) -> None:
        """Nothing to do: a row's next sequence writes its positions afresh and the mask hides the rest."""

    def save(self, row: int, length: int) -> tuple[Any, int]:
        """The row's first ``length`` positions, copied out of the cache (on the cache's device)."""
        saved = [(k[row, :, :length].clone(), v[row, :, :length].clone()) for k, v in zip(self.k, self.v, strict=True)]
        return saved, length * self.bytes_per_token

    def load(self, row: int, saved: Any, length: int) -> bool:
        for layer, (k, v) in enumerate(saved):
            self.k[layer][row, :, :length] = k[:, :length]
            self.v[layer][row, :, :length] = v[:, :length]
        return True

    @property
    def trash(self) -> int:
        return self.capacity

    def run(self, batch: Batch) -> _Running:
        return _Running(self, batch)


class _Running:
    """Context manager: the batch and cache the attention function sees on this thread."""

    def __init__(self, cache: SlotCache, batch: Batch) -> None:
        self.cache, self.batch = cache, batch

    def __enter__(self) -> None:
        _current.value = self

    def __exit__(self, *exc: object) -> None:
        _current.value = None


def slot_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Write this forward's keys and values into the slot cache, then attend over each row's own tokens.

    query: [rows, heads, width, dim]; key, value: [rows, kv_heads, width, dim]. Returns [rows, width, heads, dim].
    """
    running: _Running | None = getattr(_current, "value", None)
    if running is None:
        raise RuntimeError("slot_attention ran outside SlotCache.run(); the engine's runner sets the batch")
    cache, batch = running.cache, running.batch
    layer = cast(int, module.layer_idx)
    rows = torch.arange(batch.first, batch.first + batch.rows, device=key.device)
    rows = rows.unsqueeze(1).expand(-1, batch.width).reshape(-1)
    pos = batch.write_pos.reshape(-1)
    k_all, v_all = cache.k[layer], cache.v[layer]
    k_all[rows, :, pos] = key.transpose(1, 2).reshape(-1, cache.kv_heads, cache.head_dim).to(k_all.dtype)
    v_all[rows, :, pos] = value.transpose(1, 2).reshape(-1, cache.kv_heads, cache.head_dim).to(v_all.dtype)
    k = k_all[batch.first : batch.first + batch.rows, :, : batch.length]
    v = v_all[batch.first : batch.first + batch.rows, :, : batch.length]
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    out = _attend(query, k, v, batch.mask(window), scaling, kwargs.get("softcap"))
    return out.transpose(1, 2).contiguous(), None


def _attend(
    query: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    scaling: float | None,
    softcap: float | None,
) -> torch.Tensor:
    """Attention over the view, in a way whose result for a row does not depend on the other rows.

    The view is as long as the longest row in the batch. SDPA's fused kernels group the keys in blocks by that
    length, so a row's result moves by a float32 rounding step with the batch: harmless in float32 (greedy text
    unchanged, logprobs within 1e-6), but in 16-bit models that step flips near-tied tokens. For those, and for
    Gemma 2's logit soft-capping, attention is written out in float64, where the summation order no longer
    shows once the result is rounded back.
    """
    groups = query.shape[1] // k.shape[1]
    if softcap is None and query.dtype == torch.float32:
        return F.scaled_dot_product_attention(query, k, v, attn_mask=mask, scale=scaling, enable_gqa=groups > 1)
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query.double(), k.double().transpose(2, 3)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v.double()).to(query.dtype)
