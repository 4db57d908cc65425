"""Image slots on the device: the KV cache and each slot's state, as preallocated tensors.

Image slot s owns two cache rows, 2s (conditional) and 2s + 1 (unconditional). Each row writes at its own
position, so prompts of different lengths share a step. Nothing here reads a device value on the host.
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
from dataclasses import dataclass

import torch

from generator.checkpoint import Checkpoint

log = logging.getLogger(__name__)


def rows_of(slots: torch.Tensor) -> torch.Tensor:
    """The cache rows of image slots: 2s (conditional) and 2s + 1 (unconditional) for each.  # [2n]"""
    return torch.stack([2 * slots, 2 * slots + 1], dim=1).flatten()


def pairs(x: torch.Tensor) -> torch.Tensor:
    """Each image's entry twice, for its conditional and unconditional rows (no host sync).  # [2n, ...]"""
    return x.unsqueeze(1).expand(x.shape[0], 2, *x.shape[1:]).reshape(2 * x.shape[0], *x.shape[1:])


# -- KV cache ---------------------------------------------------------------------------------------


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zeroed tensor; on a Linux CPU, in transparent huge pages where the kernel allows them.

    A decode step reads a slice of every row's cache, a few KB from each of hundreds of places: with 4 KB
    pages that is a TLB miss after another (docs/benchmarks.md has what huge pages gained). The advice
    must come before the pages are first written, so the memory is a fresh mapping of its own: malloc may
    hand back pages an earlier tensor already wrote as 4 KB pages.
    """
    nbytes = math.prod(shape) * dtype.itemsize
    if device.type != "cpu" or not hasattr(mmap, "MADV_HUGEPAGE") or nbytes < 2 << 20:
        return torch.zeros(shape, dtype=dtype, device=device)
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)  # anonymous, not shared; the tensor keeps it alive
    with contextlib.suppress(OSError):
        memory.madvise(mmap.MADV_HUGEPAGE)  # only advice: the kernel may not allow it
    return torch.frombuffer(memory, dtype=dtype).view(shape).zero_()  # written now, as torch.zeros would be


def _head_dim(text_config: object) -> int:
    return getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads


class SlotCache:
    """Per-layer keys and values [rows, kv_heads, max_len, head_dim]; each row writes at its own position.

    Speaks the part of transformers' Cache interface the language model calls (`update`). Before each
    forward the engine says which rows it covers: `prefill(rows, source)` writes prompt row `source[i]` at
    positions [0, L) of cache row `rows[i]`; `decode(start, stop, pos, kv_len)` writes one token per row at
    `pos` for rows [start, stop) and returns the first `kv_len` positions.
    """

    is_compileable = False

    def __init__(self, layers: int, rows: int, max_len: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (rows, kv_heads, max_len, head_dim)
        self.keys = [_zeros(shape, dtype, device) for _ in range(layers)]
        self.values = [_zeros(shape, dtype, device) for _ in range(layers)]
        self.max_len = max_len
        self._row_index = torch.arange(rows, device=device)
        self._rows: torch.Tensor | None = None
        self._source: torch.Tensor | None = None
        self._start = self._stop = 0
        self._pos: torch.Tensor | None = None
        self._kv_len = max_len

    @classmethod
    def for_model(cls, checkpoint: Checkpoint, rows: int, max_len: int) -> SlotCache:
        text = checkpoint.model.config.text_config
        return cls(text.num_hidden_layers, rows, max_len, text.num_key_value_heads, _head_dim(text),
                   checkpoint.dtype, checkpoint.device)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def prefill(self, rows: torch.Tensor, source: torch.Tensor) -> None:
        self._rows, self._source = rows, source

    def decode(self, start: int, stop: int, pos: torch.Tensor, kv_len: int) -> None:
        self._rows, self._start, self._stop, self._pos, self._kv_len = None, start, stop, pos, kv_len

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self._rows is not None:
            length = key_states.shape[2]
            keys[self._rows, :, :length] = key_states[self._source]
            values[self._rows, :, :length] = value_states[self._source]
            return key_states, value_states
        # Index writes into the whole tensors (faster than scatter_ on CPU); torch.compile does them in place,
        # where a write into a slice of the cache became a copy of the slice.
        rows = self._row_index[self._start : self._stop]
        keys[rows, :, self._pos] = key_states[:, :, 0]
        values[rows, :, self._pos] = value_states[:, :, 0]
        return keys[self._start : self._stop, :, : self._kv_len], values[self._start : self._stop, :, : self._kv_len]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


def kv_bytes_per_image(text_config: object, dtype: torch.dtype, length: int) -> int:
    """KV cache bytes one image slot (its two rows) of `length` positions takes, from the text config alone."""
    per_token = 2 * text_config.num_hidden_layers * text_config.num_key_value_heads * _head_dim(text_config)
    return 2 * per_token * length * dtype.itemsize


def kv_bytes_per_row(checkpoint: Checkpoint, length: int) -> int:
    """KV cache bytes one row of `length` tokens takes."""
    return kv_bytes_per_image(checkpoint.model.config.text_config, checkpoint.dtype, length) // 2


def margin_bytes(total: int) -> int:
    """Device memory kept out of the KV cache: prefill activations, logits and the VQ decoder's feature maps."""
    return max(int(0.1 * total), 3 << 30)


def image_slots(free: int, total: int, per_image: int, *, limit: int = 64) -> int:
    """Image slots whose KV cache fits in `free` bytes of a `total`-byte device after the margin; 0 when none does.

    The one sizing rule: the engine applies it to the memory free after loading, `janus-bot plan` to a card's
    memory less the weights it works out from the config.
    """
    return max(0, min(limit, (free - margin_bytes(total)) // per_image))


def device_memory(device: torch.device) -> tuple[int, int] | None:
    """(free, total) bytes of a CUDA device; None for a CPU, whose batch is not sized from memory."""
    return torch.cuda.mem_get_info(device) if device.type == "cuda" else None


def auto_batch_images(checkpoint: Checkpoint, max_prompt_tokens: int, *, limit: int = 64) -> int:
    """How many images fit the free GPU memory (16 on CPU), at least one: two KV rows each, after the margin."""
    memory = device_memory(checkpoint.device)
    if memory is None:
        return 16
    free, total = memory
    per_image = kv_bytes_per_image(checkpoint.model.config.text_config, checkpoint.dtype,
                                   max_prompt_tokens + checkpoint.num_image_tokens)
    fit = max(1, image_slots(free, total, per_image, limit=limit))
    log.info("sizing the batch for %d images (%.1f GiB free, %.0f MiB of KV cache each)", fit, free / 2**30,
             per_image / 2**20)
    return fit


# -- per-slot state ---------------------------------------------------------------------------------


@dataclass
class SlotState:
    """Everything a step reads and writes about each cache row and image slot, one tensor per field."""

    # Per cache row [2 * slots].
    write_pos: torch.Tensor  # where the row's next key and value go in the cache
    position_ids: torch.Tensor  # the rotary position of the row's next token
    attention_mask: torch.Tensor  # [rows, max_len] the cache positions holding the row's tokens
    # Per image slot [slots].
    live: torch.Tensor  # holds an image being generated
    cfg: torch.Tensor
    temperature: torch.Tensor
    uniforms: torch.Tensor  # [slots, num_image_tokens] every step's random number, drawn at admission
    sampled: torch.Tensor  # tokens sampled so far
    forced_tokens: torch.Tensor  # [slots, num_image_tokens] a source grid's codes (a variation's first tokens ...)
    forced_mask: torch.Tensor  # [slots, num_image_tokens] bool: the cells fed forced_tokens instead of a sample
    tokens: torch.Tensor  # [slots, num_image_tokens]
    logits: torch.Tensor | None  # [slots, num_image_tokens, codebook] guided logits, when recorded

    @classmethod
    def zeros(cls, slots: int, max_len: int, num_tokens: int, device: torch.device, *,
              record_logits_of: int | None = None) -> SlotState:
        """A state of free slots; `record_logits_of` (a codebook size) keeps every step's guided logits."""
        rows = 2 * slots
        attention_mask = torch.zeros(rows, max_len, dtype=torch.bool, device=device)
        attention_mask[:, 0] = True  # a row never used still attends to something (no NaN)

        def per_slot(*shape: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.zeros(slots, *shape, dtype=dtype, device=device)

        return cls(
            write_pos=torch.zeros(rows, dtype=torch.long, device=device),
            position_ids=torch.zeros(rows, dtype=torch.long, device=device),
            attention_mask=attention_mask,
            live=per_slot(dtype=torch.bool),
            cfg=torch.ones(slots, dtype=torch.float32, device=device),
            temperature=torch.ones(slots, dtype=torch.float32, device=device),
            uniforms=per_slot(num_tokens, dtype=torch.float32),
            sampled=per_slot(),
            forced_tokens=per_slot(num_tokens),
            forced_mask=per_slot(num_tokens, dtype=torch.bool),
            tokens=per_slot(num_tokens),
            logits=None if record_logits_of is None else per_slot(num_tokens, record_logits_of, dtype=torch.float32),
        )

    def admit(self, slots: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor,
              cfg: torch.Tensor, temperature: torch.Tensor, uniforms: torch.Tensor) -> None:
        """Start image slots after a prefill: cache row i of `slots` holds prompt row `source[i]`.

        mask, position_ids: [prompt rows, L] of the left-padded prompts; cfg, temperature: [n];
        uniforms: [n, num_image_tokens].
        """
        rows = rows_of(slots)
        self.attention_mask[rows] = False
        self.attention_mask[rows, : mask.shape[1]] = mask[source]
        self.write_pos[rows] = mask.shape[1]
        self.position_ids[rows] = position_ids[source, -1] + 1
        self.cfg[slots] = cfg
        self.temperature[slots] = temperature
        self.uniforms[slots] = uniforms
        self.sampled[slots] = 0
        self.forced_mask[slots] = False

    def force(self, slots: list[int], codes: torch.Tensor, keep: torch.Tensor) -> None:
        """The cells in `keep` of these slots' images are given `codes`, not sampled.  # [1 or len(slots), T] each"""
        device = self.forced_tokens.device
        index = torch.tensor(slots, device=device)
        self.forced_tokens[index] = codes.to(device).expand(len(slots), -1)
        self.forced_mask[index] = keep.to(device).expand(len(slots), -1)

    def finished_tokens(self, slots: torch.Tensor) -> torch.Tensor:
        """The slots' grids, kept cells filled in: cells after a request's last sampled one were never stepped."""
        return torch.where(self.forced_mask[slots], self.forced_tokens[slots], self.tokens[slots])

    def record(self, slots: torch.Tensor | slice, at: torch.Tensor, token: torch.Tensor, guided: torch.Tensor
               ) -> None:
        """Write live slots' token (and guided logits) of step `at` [n, 1]; each counts one more token sampled."""
        live = self.live[slots]
        tokens = self.tokens[slots]
        tokens.scatter_(1, at, torch.where(live, token, tokens.gather(1, at)[:, 0])[:, None])
        if isinstance(slots, torch.Tensor):  # a gathered copy, not a view: write it back
            self.tokens[slots] = tokens
        if self.logits is not None:
            index = slots if isinstance(slots, torch.Tensor) else torch.arange(
                slots.start, slots.stop, device=live.device)
            self.logits[index, at[:, 0]] = torch.where(live[:, None], guided, self.logits[index, at[:, 0]])
        self.sampled[slots] += live.long()

    def advance(self, rows: slice, live_rows: torch.Tensor) -> None:
        """Live rows wrote one token: their next one goes one position on."""
        self.write_pos[rows] += live_rows
        self.position_ids[rows] += live_rows

    def release(self, slots: torch.Tensor) -> None:
        """Free slots keep stepping with the batch: back to one valid position, so they read no stale cache."""
        self.live[slots] = False
        rows = rows_of(slots)
        self.attention_mask[rows] = False
        self.attention_mask[rows, 0] = True
        self.write_pos[rows] = 0
        self.position_ids[rows] = 0
