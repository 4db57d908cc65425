"""Batched classifier-free-guidance sampling for Janus: many requests, one forward pass per step.

Every image owns two rows of a preallocated KV cache (conditional, unconditional). Rows keep their own
write position and position ids, so requests of different prompt lengths share a step, and a request
can join while others are half-way. Sampling inverts the softmax's cumulative distribution at one
counter-based uniform number per image and step: an image's random numbers depend only on (seed, image
index, step), never on its neighbours in the batch.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import math
import mmap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.fx.experimental import _config as fx_config
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaModel

from generator.checkpoint import Checkpoint, first_line
from generator.prompt import encode_prompt, unconditional_ids

log = logging.getLogger(__name__)

OUT_OF_MEMORY = "The GPU ran out of memory for this request; try fewer images."
KV_BLOCK = 64  # static-shape steps attend over the cache in whole blocks of this many positions
_M32 = 0xFFFFFFFF
_MIX = 0x45D9F3B
_GOLDEN = 0x9E3779B1
_ids = itertools.count()


class RequestError(ValueError):
    """A request the engine cannot run; the message says what to change."""


@dataclass
class Request:
    """One prompt and its settings; `prefix` forces the first tokens of every image (variations)."""

    prompt: str
    num_images: int = 4
    cfg: float = 5.0
    temperature: float = 1.0
    seed: int = 0
    prefix: torch.Tensor | None = None  # [k] or [num_images, k]
    id: str = field(default_factory=lambda: f"r{next(_ids)}")


@dataclass
class Result:
    """Tokens of a finished request (or why it has none)."""

    request: Request
    tokens: torch.Tensor | None  # [num_images, num_image_tokens] int64 on CPU
    status: str = "done"  # done | cancelled | failed
    error: str | None = None
    logits: torch.Tensor | None = None  # [num_images, num_image_tokens, codebook] when recorded


@dataclass
class StepReport:
    """Reported after every step; `tokens` (the rows so far) only every `preview_every` steps."""

    request: Request
    step: int
    total: int
    tokens: torch.Tensor | None = None  # [num_images, step]


# -- sampling ---------------------------------------------------------------------------------------


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # A 32-bit integer finaliser in int64 arithmetic: products stay below 2**59, so nothing overflows.
    x = x ^ (x >> 16)
    x = (x * _MIX) & _M32
    x = x ^ (x >> 16)
    x = (x * _MIX) & _M32
    return x ^ (x >> 16)


def _mix32_int(x: int) -> int:
    x ^= x >> 16
    x = (x * _MIX) & _M32
    x ^= x >> 16
    x = (x * _MIX) & _M32
    return x ^ (x >> 16)


def image_key(seed: int, index: int) -> int:
    """The random stream of image `index` of a request with `seed`."""
    seed &= (1 << 64) - 1
    key = _mix32_int((seed & _M32) ^ 0x243F6A88)
    key = _mix32_int(key ^ (seed >> 32) ^ 0x85A308D3)
    return _mix32_int(key ^ (index * _GOLDEN & _M32))


def uniform(keys: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """A number in (0, 1] that is a pure function of (key, step): 24 random bits.  # [B]"""
    bits = _mix32(keys ^ _mix32((steps * _GOLDEN + 0x13198A2E) & _M32))
    return ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, cfg: torch.Tensor) -> torch.Tensor:
    """uncond + cfg * (cond - uncond), per image weight.  # [B, V]"""
    return uncond + cfg[:, None] * (cond - uncond)


def sample(logits: torch.Tensor, temperature: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """softmax(logits / T) sampling by inverting its cumulative sum at u in (0, 1] (one per row, e.g. from
    `uniform`); T == 0 is argmax.  # [B]

    One random number per row instead of one per vocabulary entry (as Gumbel-max needs): a handful of
    kernels over the logits. The first index whose cumulative probability reaches u * total is drawn: as
    0 < u <= 1, that is always an index, and never one of probability 0.
    """
    greedy = temperature <= 0
    inv_t = torch.where(greedy, torch.ones_like(temperature), 1.0 / temperature.clamp(min=1e-6))
    cdf = torch.softmax(logits * inv_t[:, None], dim=-1).cumsum_(dim=-1)
    drawn = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None])[:, 0]  # the total is 1 up to rounding
    return torch.where(greedy, logits.argmax(dim=-1), drawn)


def _pairs(x: torch.Tensor) -> torch.Tensor:
    """Each image's entry twice, for its conditional and unconditional rows (no host sync).  # [2n, ...]"""
    return x.unsqueeze(1).expand(x.shape[0], 2, *x.shape[1:]).reshape(2 * x.shape[0], *x.shape[1:])


def _rows_of(slots: torch.Tensor) -> torch.Tensor:
    """The cache rows of image slots: 2s (conditional) and 2s + 1 (unconditional) for each.  # [2n]"""
    return torch.stack([2 * slots, 2 * slots + 1], dim=1).flatten()


# -- KV cache ---------------------------------------------------------------------------------------


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zeroed tensor; on a Linux CPU, in transparent huge pages where the kernel allows them.

    A decode step reads a slice of every row's cache, a few KB from each of hundreds of places: with 4 KB
    pages that is a TLB miss after another (on the 2-core VM attention ran 18% faster over huge pages and
    the 8 x 4 workload 2-5%). The advice must come before the pages are first written, so the memory is a
    fresh mapping of its own: malloc may hand back pages an earlier tensor already wrote as 4 KB pages.
    """
    nbytes = math.prod(shape) * dtype.itemsize
    if device.type != "cpu" or not hasattr(mmap, "MADV_HUGEPAGE") or nbytes < 2 << 20:
        return torch.zeros(shape, dtype=dtype, device=device)
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)  # anonymous, not shared; the tensor keeps it alive
    with contextlib.suppress(OSError):
        memory.madvise(mmap.MADV_HUGEPAGE)  # only advice: the kernel may not allow it
    return torch.frombuffer(memory, dtype=dtype).view(shape).zero_()  # written now, as torch.zeros would be


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
        # Index writes into the whole tensors (a third of scatter_'s time on CPU); torch.compile does them in
        # place, where a write into a slice of the cache became a copy of the slice.
        rows = self._row_index[self._start : self._stop]
        keys[rows, :, self._pos] = key_states[:, :, 0]
        values[rows, :, self._pos] = value_states[:, :, 0]
        return keys[self._start : self._stop, :, : self._kv_len], values[self._start : self._stop, :, : self._kv_len]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


def kv_bytes_per_row(checkpoint: Checkpoint, length: int) -> int:
    """KV cache bytes one row of `length` tokens takes."""
    text = checkpoint.model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim
    return per_token * length * torch.tensor([], dtype=checkpoint.dtype).element_size()


def auto_batch_images(checkpoint: Checkpoint, max_prompt_tokens: int, *, limit: int = 64) -> int:
    """How many images fit the free GPU memory (16 on CPU): two KV rows each, after a reserve."""
    device = checkpoint.device
    if device.type != "cuda":
        return 16
    free, total = torch.cuda.mem_get_info(device)
    per_image = 2 * kv_bytes_per_row(checkpoint, max_prompt_tokens + checkpoint.num_image_tokens)
    # The reserve covers prefill activations, logits and the VQ decoder's largest feature maps.
    usable = free - max(int(0.1 * total), 3 << 30)
    fit = max(1, min(limit, usable // per_image))
    log.info("sizing the batch for %d images (%.1f GiB free, %.0f MiB of KV cache each)", fit, free / 2**30,
             per_image / 2**20)
    return fit


# -- decode step ------------------------------------------------------------------------------------


def fused_weight(*linears: torch.nn.Linear) -> torch.Tensor:
    """The weights of bias-free `linears` stacked into one [sum of outputs, inputs] tensor, without a copy.

    The first call moves them into one tensor in place: each module's weight becomes a view of its rows,
    so the model holds the same bytes, its own forward still works, and a decode step runs one GEMM
    where it ran several (on a GPU at a few dozen rows, a larger GEMM streams its weights faster).
    Later calls find that layout and return a view over it. On a GPU the old weights' memory goes back
    to the driver at once: kept in torch's cache, a 7B model's 8 GB of them would sit beside the copy.
    """
    weights = [linear.weight for linear in linears]
    first, rows = weights[0], sum(w.shape[0] for w in weights)
    storage, offset, laid_out = first.untyped_storage().data_ptr(), first.storage_offset(), True
    for weight in weights:
        laid_out &= (weight.is_contiguous() and weight.untyped_storage().data_ptr() == storage
                     and weight.storage_offset() == offset)
        offset += weight.numel()
    if laid_out:
        return first.detach().as_strided((rows, first.shape[1]), (first.shape[1], 1))
    with torch.inference_mode(first.is_inference()), torch.no_grad():  # a tensor of the parameters' kind
        fused = torch.cat([weight.detach() for weight in weights])
        for linear, part in zip(linears, fused.split([w.shape[0] for w in weights])):
            linear.weight.data = part
    if fused.is_cuda:
        torch.cuda.empty_cache()
    return fused


class LlamaStep:
    """One token per row through a Llama language model, written out over the model's own modules.

    The arithmetic of transformers' LlamaModel forward in fewer kernels: Q/K/V and gate/up are one GEMM
    each (`fused_weight`); the rotary embedding is one batched matrix product per layer, each row's
    queries and keys times that row's rotation (computed once a step); the residual sums happen inside
    the output GEMMs (`addmm_`). 12 kernels a layer where transformers' forward launches 26; on the
    2-core CPU the 8 x 4 `small` workload takes 11% less time. On a CPU, attention is two batched GEMMs
    and a softmax rather than SDPA's kernel (`_attention`). `unsupported(lm)` names what it does not
    cover; the engine then decodes through transformers.
    """

    def __init__(self, lm: torch.nn.Module) -> None:
        self.lm = lm
        attn = lm.layers[0].self_attn
        self.heads, self.head_dim, self.scaling = lm.config.num_attention_heads, attn.head_dim, attn.scaling
        self.weights = [(fused_weight(layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj),
                         fused_weight(layer.mlp.gate_proj, layer.mlp.up_proj)) for layer in lm.layers]
        # On a CPU, attention over one query a row runs faster as two batched GEMMs than in SDPA's kernel.
        self._sdpa = lm.device.type != "cpu"
        # x @ (diag(cos) + swap * sin) is x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1).
        half = torch.arange(self.head_dim // 2, device=lm.device)
        self._swap = torch.zeros(self.head_dim, self.head_dim, dtype=lm.dtype, device=lm.device)
        self._swap[half + self.head_dim // 2, half] = -1
        self._swap[half, half + self.head_dim // 2] = 1

    @staticmethod
    def unsupported(lm: torch.nn.Module) -> str | None:
        """Why this language model must decode through transformers' forward, or None."""
        config = lm.config
        if type(lm) is not LlamaModel or any(type(layer) is not LlamaDecoderLayer for layer in lm.layers):
            return f"a {type(lm).__name__} language model"
        if config.num_key_value_heads != config.num_attention_heads:
            return "grouped-query attention"
        if config.attention_bias or config.mlp_bias or getattr(config, "pretraining_tp", 1) != 1:
            return "biased or split projections"
        return None

    def __call__(self, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, cache: SlotCache
                 ) -> torch.Tensor:
        """Final hidden states [rows, H] for embeds [rows, 1, H], position_ids [rows, 1] and an additive mask."""
        rows, heads, dim = embeds.shape[0], self.heads, self.head_dim
        cos, sin = self.lm.rotary_emb(embeds, position_ids=position_ids)  # [rows, 1, dim]
        rotation = torch.diag_embed(cos[:, 0]) + self._swap * sin  # [rows, dim, dim]
        if not self._sdpa:  # the mask of every (row, head) pair the batched GEMMs add to their scores
            mask = mask.expand(rows, heads, 1, mask.shape[-1]).reshape(rows * heads, 1, mask.shape[-1])
        hidden = embeds[:, 0].clone()  # the residual stream, summed into in place
        for index, (layer, (qkv_weight, gate_up_weight)) in enumerate(zip(self.lm.layers, self.weights)):
            attn, mlp = layer.self_attn, layer.mlp
            qkv = F.linear(layer.input_layernorm(hidden), qkv_weight).view(rows, 3 * heads, dim)
            qk = torch.bmm(qkv[:, : 2 * heads], rotation)  # [rows, 2 heads, dim], rotated
            keys, values = cache.update(qk[:, heads:, None], qkv[:, 2 * heads :, None], index)
            hidden.addmm_(self._attention(qk[:, :heads], keys, values, mask), attn.o_proj.weight.t())
            gate, up = F.linear(layer.post_attention_layernorm(hidden), gate_up_weight).chunk(2, dim=-1)
            hidden.addmm_(mlp.act_fn(gate) * up, mlp.down_proj.weight.t())
        return self.lm.norm(hidden)

    def _attention(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
                   ) -> torch.Tensor:
        """Queries [rows, heads, dim] over keys and values [rows, heads, kv, dim] -> [rows, heads * dim]."""
        rows, heads, dim = queries.shape
        if self._sdpa:
            out = F.scaled_dot_product_attention(queries[:, :, None], keys, values, attn_mask=mask, scale=self.scaling)
            return out.reshape(rows, heads * dim)
        kv = keys.shape[2]  # (rows, heads) merge into one batch dimension of the cache's views: no copy
        scores = torch.baddbmm(mask, queries.reshape(rows * heads, 1, dim),
                               keys.reshape(rows * heads, kv, dim).transpose(1, 2), alpha=self.scaling)
        out = torch.bmm(torch.softmax(scores, dim=-1), values.reshape(rows * heads, kv, dim))
        return out.view(rows, heads * dim)


# -- engine -----------------------------------------------------------------------------------------


@dataclass
class _Running:
    request: Request
    slots: list[int]  # image slots, in image order
    step: int = 0  # tokens sampled so far, for every image of the request


class Engine:
    """A long-lived batch of image slots; requests join at the next step and leave as they finish."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        max_batch_images: int | None = None,
        max_prompt_tokens: int = 256,
        preview_every: int = 0,
        record_logits: bool = False,
        on_progress: Callable[[StepReport], None] | None = None,
        graphs: bool | None = None,
        compile: bool = False,
    ) -> None:
        self.checkpoint = checkpoint
        self.model = checkpoint.model
        self.processor = checkpoint.processor
        self.n_tokens = checkpoint.num_image_tokens
        lm = self.model.model.language_model
        why = LlamaStep.unsupported(lm)
        self._step = LlamaStep(lm) if why is None else None  # first: it may move weights (see fused_weight)
        self._eager_step = self._step
        if why is not None:
            log.info("decoding through transformers' forward: the engine's own step does not cover %s", why)
        if max_batch_images is None:
            max_batch_images = auto_batch_images(checkpoint, max_prompt_tokens)
        self.max_batch_images = max_batch_images
        self.max_prompt_tokens = max_prompt_tokens
        self.preview_every = preview_every
        self.record_logits = record_logits
        self.on_progress = on_progress
        self.pad_id = self.processor.tokenizer.pad_token_id

        device, j = checkpoint.device, max_batch_images
        text = self.model.config.text_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.max_len = max_prompt_tokens + self.n_tokens
        self.cache = SlotCache(text.num_hidden_layers, 2 * j, self.max_len, text.num_key_value_heads,
                               head_dim, checkpoint.dtype, device)
        # Per row (2 per image slot): cache write position, next position id, which cache slots are real.
        self.pos = torch.zeros(2 * j, dtype=torch.long, device=device)
        self.pid = torch.zeros(2 * j, dtype=torch.long, device=device)
        self.valid = torch.zeros(2 * j, self.max_len, dtype=torch.bool, device=device)
        self.valid[:, 0] = True  # a row never used still attends to something (no NaN)
        self._attend = torch.zeros((), dtype=checkpoint.dtype, device=device)
        self._ignore = torch.full((), -math.inf, dtype=checkpoint.dtype, device=device)
        # Per image slot: settings, random numbers, forced prefix, sampled tokens.
        self.cfg = torch.ones(j, dtype=torch.float32, device=device)
        self.temperature = torch.ones(j, dtype=torch.float32, device=device)
        self.randoms = torch.zeros(j, self.n_tokens, dtype=torch.float32, device=device)  # u for every step
        self.step_of = torch.zeros(j, dtype=torch.long, device=device)
        self.live = torch.zeros(j, dtype=torch.bool, device=device)
        self.prefix = torch.zeros(j, self.n_tokens, dtype=torch.long, device=device)
        self.prefix_len = torch.zeros(j, dtype=torch.long, device=device)
        self.tokens = torch.zeros(j, self.n_tokens, dtype=torch.long, device=device)
        self.logits: torch.Tensor | None = None
        if record_logits:
            vocab = self.model.config.vq_config.num_embeddings
            self.logits = torch.zeros(j, self.n_tokens, vocab, dtype=torch.float32, device=device)
        # Host mirrors: nothing in the step loop reads a device value back.
        self._host_pos = [0] * (2 * j)
        self._free = list(range(j))
        self._running: dict[str, _Running] = {}
        # Static shapes: each step runs at a power-of-two number of slots and a whole number of KV blocks,
        # so a handful of shapes cover every batch; on CUDA each shape is captured once as a CUDA graph.
        self.static = False
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        if compile:
            self._compile()
        if device.type == "cuda" if graphs is None else graphs:
            self._capture()

    def static_shapes(self) -> list[tuple[int, int]]:
        """Every (image slots, cache length) a static step can run at, largest first."""
        j = self.max_batch_images
        slots = sorted({min(1 << i, j) for i in range(j.bit_length() + 1)})
        lengths = sorted({min(k, self.max_len) for k in range(KV_BLOCK, self.max_len + KV_BLOCK, KV_BLOCK)})
        return [(s, k) for s in reversed(slots) for k in reversed(lengths)]

    def _static_shape(self, hi: int, kv_len: int) -> tuple[int, int]:
        """The static shape that covers slots [0, hi) and `kv_len` cache positions."""
        slots = min(self.max_batch_images, 1 << (hi - 1).bit_length())
        return slots, min(self.max_len, -(-kv_len // KV_BLOCK) * KV_BLOCK)

    def _compile(self) -> None:
        """Run the own decode step through torch.compile (inductor), or stay eager with one log line.

        The whole step is one graph (`fullgraph`: a graph break inside its loop over layers would leave
        every layer eager), cache writes included. One dynamic-shape compile covers every batch and cache
        length: sizes that happen to be equal in the warm-up step are not taken to be equal always
        (`use_duck_shape`). Inductor keeps what it built on disk for the next start. The warm-up step
        compiles it now rather than in a request, and touches no live slot.
        """
        if self._step is None:
            log.warning("torch.compile needs the engine's own decode step; decoding through transformers")
            return
        self._step = torch.compile(self._eager_step, dynamic=True, fullgraph=True)
        try:
            with torch.inference_mode(), fx_config.patch(use_duck_shape=False):
                self._decode(0, self.max_batch_images, min(self.max_len, KV_BLOCK))
        except Exception as err:  # any compiler failure means eager
            log.warning("torch.compile unavailable (%s); decoding eagerly", first_line(err))
            self._step = self._eager_step
            return
        log.info("decode step compiled by torch.compile")

    def _capture(self) -> None:
        """Switch to static shapes; on CUDA capture one graph per shape, or fall back to eager with one log line.

        No slot is live yet, so the warm-up steps change nothing a request will read.
        """
        self.static = True
        device = self.checkpoint.device
        if device.type != "cuda":
            return  # the same shapes, run eagerly: what the CPU tests check
        try:
            pool = torch.cuda.graph_pool_handle()
            stream = torch.cuda.Stream(device)
            with torch.inference_mode():
                for hi, kv_len in self.static_shapes():  # largest first: later graphs fit in its memory
                    stream.wait_stream(torch.cuda.current_stream(device))
                    with torch.cuda.stream(stream):
                        self._decode(0, hi, kv_len)
                    torch.cuda.current_stream(device).wait_stream(stream)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool):
                        self._decode(0, hi, kv_len)
                    self._graphs[hi, kv_len] = graph
                for graph in self._graphs.values():  # a graph's first launch uploads it: not in a request's time
                    graph.replay()
            torch.cuda.synchronize(device)
        except Exception as err:  # any capture failure means eager
            self._graphs.clear()
            torch.cuda.synchronize(device)
            if self._step is not self._eager_step:  # graphs of the eager step beat a compiled step without them
                log.warning("CUDA graphs of the compiled step failed (%s); capturing the eager step",
                            first_line(err))
                self._step = self._eager_step
                return self._capture()
            log.warning("CUDA graphs unavailable (%s); decoding eagerly", first_line(err))
            self.static = False
            return
        log.info("captured %d CUDA graphs of the decode step", len(self._graphs))

    @property
    def decode_path(self) -> str:
        """How a decode step runs, in words: which step, compiled or not, captured or not."""
        step = "transformers' forward" if self._step is None else "own step"
        if self._step is not self._eager_step:
            step += ", compiled"
        return step + (f", {len(self._graphs)} CUDA graphs" if self._graphs else "")

    # -- admission --

    @property
    def free_images(self) -> int:
        return len(self._free)

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def validate(self, request: Request) -> list[int]:
        """Check a request against this engine; returns its conditional prompt ids."""
        if not request.prompt.strip():
            raise RequestError("The prompt is empty; describe the picture you want.")
        if not 1 <= request.num_images <= self.max_batch_images:
            raise RequestError(f"Ask for between 1 and {self.max_batch_images} images, not {request.num_images}.")
        if not math.isfinite(request.cfg) or request.cfg < 0:
            raise RequestError(f"The guidance weight must be a number of at least 0, not {request.cfg}.")
        if not math.isfinite(request.temperature) or request.temperature < 0:
            raise RequestError(f"The temperature must be a number of at least 0, not {request.temperature}.")
        ids = encode_prompt(self.processor, request.prompt)
        if len(ids) > self.max_prompt_tokens:
            raise RequestError(
                f"The prompt is too long ({len(ids)} tokens, at most {self.max_prompt_tokens}); shorten it."
            )
        if request.prefix is not None:
            prefix = request.prefix
            if prefix.dim() not in (1, 2) or prefix.shape[-1] > self.n_tokens or (
                prefix.dim() == 2 and prefix.shape[0] != request.num_images
            ):
                raise RequestError(f"A token prefix must be [k] or [num_images, k] with k <= {self.n_tokens}.")
        return ids

    def add(self, requests: Sequence[Request]) -> list[Result]:
        """Prefill requests into free slots; they sample their first token now and join the next step.

        Invalid requests raise RequestError before anything changes. Returns the requests that could not
        start (out of memory even when prefilled alone), as failed results.
        """
        if not requests:
            return []
        prompts = [self.validate(r) for r in requests]
        need = sum(r.num_images for r in requests)
        if need > len(self._free):
            raise RequestError(f"{need} images do not fit in {len(self._free)} free slots.")
        return self._add(list(requests), prompts)

    def _add(self, requests: list[Request], prompts: list[list[int]]) -> list[Result]:
        slots_of: list[list[int]] = [[] for _ in requests]
        for request, slots in zip(requests, slots_of):
            slots += [self._free.pop(0) for _ in range(request.num_images)]
        try:
            self._prefill(requests, slots_of, prompts)
        except torch.OutOfMemoryError:
            self._free = sorted(self._free + [s for slots in slots_of for s in slots])
            self.live[torch.tensor([s for slots in slots_of for s in slots], device=self.live.device)] = False
            self._free_memory()
            if len(requests) == 1:
                log.warning("out of memory prefilling request %s alone; failing it", requests[0].id)
                return [Result(requests[0], None, status="failed", error=OUT_OF_MEMORY)]
            log.warning("out of memory prefilling %d requests together; adding them one by one", len(requests))
            return [failed for request, ids in zip(requests, prompts) for failed in self._add([request], [ids])]
        for request, slots in zip(requests, slots_of):
            self._running[request.id] = _Running(request, slots, step=1)
        self._report(requests)
        return []

    def _prefill(self, requests: Sequence[Request], slots_of: list[list[int]], prompts: list[list[int]]) -> None:
        """Run each request's two prompt rows once; every image of the request starts from their cache."""
        device = self.checkpoint.device
        rows = [ids for cond in prompts for ids in (cond, unconditional_ids(cond, self.processor))]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):  # left padding
            ids[i, length - len(row):] = torch.tensor(row)
            mask[i, length - len(row):] = True
        ids, mask = ids.to(device), mask.to(device)
        slots = [s for group in slots_of for s in group]
        slot_t = torch.tensor(slots, dtype=torch.long, device=device)
        row_t = _rows_of(slot_t)
        owner = torch.tensor([i for i, group in enumerate(slots_of) for _ in group], device=device)
        source = _rows_of(owner)  # the prompt row each cache row copies

        self.valid[row_t] = False
        self.valid[row_t, :length] = mask[source]
        pid = (mask.cumsum(dim=1) - 1).clamp(min=0)
        self.pos[row_t] = length
        self.pid[row_t] = pid[source, -1] + 1
        for slot in slots:
            self._host_pos[2 * slot] = self._host_pos[2 * slot + 1] = length

        settings = [(r, i) for r, group in zip(requests, slots_of) for i in range(len(group))]
        self.cfg[slot_t] = torch.tensor([r.cfg for r, _ in settings], dtype=torch.float32, device=device)
        self.temperature[slot_t] = torch.tensor([r.temperature for r, _ in settings], dtype=torch.float32,
                                                device=device)
        # Every step's random number, drawn now: a step reads one instead of hashing it in ~30 small kernels.
        keys = torch.tensor([image_key(r.seed, i) for r, i in settings], device=device)
        self.randoms[slot_t] = uniform(keys[:, None], torch.arange(self.n_tokens, device=device))
        self.step_of[slot_t] = 0
        self.prefix_len[slot_t] = 0
        for request, group in zip(requests, slots_of):
            if request.prefix is not None:
                prefix = request.prefix.to(device).expand(len(group), -1)
                index = torch.tensor(group, device=device)
                self.prefix[index, : prefix.shape[1]] = prefix
                self.prefix_len[index] = prefix.shape[1]

        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=device)
        attn = (causal & mask[:, None, :]) | eye  # pad queries see themselves: finite states, no NaN
        embeds = self.model.get_input_embeddings()(ids)
        self.cache.prefill(row_t, source)
        hidden = self._forward(embeds, attn[:, None], pid)
        self.live[slot_t] = True
        self._sample(slot_t, hidden[source])

    # -- stepping --

    def _forward(self, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        out = self.model.model.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, cache=self.cache, use_cache=True
        )
        return out.last_hidden_state[:, -1]  # [rows, H]

    def _sample(self, slots: torch.Tensor | slice, hidden: torch.Tensor) -> None:
        """Guided logits and one sampled token for each image slot in `slots` from its two rows' states."""
        logits = self.model.model.generation_head(hidden).float()
        guided = guided_logits(logits[0::2], logits[1::2], self.cfg[slots])
        steps = self.step_of[slots]
        at = steps.clamp(max=self.n_tokens - 1)[:, None]
        token = sample(guided, self.temperature[slots], self.randoms[slots].gather(1, at)[:, 0])
        token = torch.where(steps < self.prefix_len[slots], self.prefix[slots].gather(1, at)[:, 0], token)
        live = self.live[slots]
        tokens = self.tokens[slots]
        tokens.scatter_(1, at, torch.where(live, token, tokens.gather(1, at)[:, 0])[:, None])
        if isinstance(slots, torch.Tensor):
            self.tokens[slots] = tokens
        if self.logits is not None:
            index = slots if isinstance(slots, torch.Tensor) else torch.arange(len(live), device=live.device)
            self.logits[index, at[:, 0]] = torch.where(live[:, None], guided, self.logits[index, at[:, 0]])
        self.step_of[slots] += live.long()

    def step(self) -> list[Result]:
        """One token for every running image; returns the requests that finished (or failed)."""
        finished = self._collect()
        if not self._running:
            return finished
        slots = [s for run in self._running.values() for s in run.slots]
        finished += self._decode_split(0, max(slots) + 1, max(self._host_pos[2 * s] for s in slots) + 1)
        for run in self._running.values():
            run.step += 1
            for s in run.slots:
                self._host_pos[2 * s] += 1
                self._host_pos[2 * s + 1] += 1
        self._report()
        return finished + self._collect()

    def _decode_split(self, lo: int, hi: int, kv_len: int) -> list[Result]:
        """Decode image slots [lo, hi); out of memory splits the range, and fails a request only alone."""
        try:
            if self.static and lo == 0:  # the halves of a split run eagerly at their own shapes
                hi, kv_len = self._static_shape(hi, kv_len)
                graph = self._graphs.get((hi, kv_len))
                if graph is not None:
                    graph.replay()
                    return []
            self._decode(lo, hi, kv_len)
            return []
        except torch.OutOfMemoryError:
            self._free_memory()
        runs = [run for run in self._running.values() if any(lo <= s < hi for s in run.slots)]
        if hi - lo == 1:
            log.warning("out of memory decoding one image alone; failing request %s", runs[0].request.id)
            return [self._release(runs[0], "failed", OUT_OF_MEMORY)]
        log.warning("out of memory on a %d-image step; splitting it in two", hi - lo)
        mid = (lo + hi) // 2
        return self._decode_split(lo, mid, kv_len) + self._decode_split(mid, hi, kv_len)

    def _decode(self, lo: int, hi: int, kv_len: int) -> None:
        """Feed each image's last token and sample the next, for image slots [lo, hi), over `kv_len` positions.

        Nothing here reads a device value on the host, so the step can be captured as a CUDA graph.
        """
        r0, r1 = 2 * lo, 2 * hi
        live_rows = _pairs(self.live[lo:hi].long())
        last = self.tokens[lo:hi].gather(1, (self.step_of[lo:hi] - 1).clamp(min=0)[:, None])  # [n, 1]
        # Both rows of an image feed the same token: its embedding is computed once and used twice.
        embeds = _pairs(self.model.prepare_embeddings_for_image_generation(last))  # [2n, 1, H]
        pos = self.pos[r0:r1]
        self.valid[r0:r1].scatter_(1, pos[:, None], True)
        self.cache.decode(r0, r1, pos, kv_len)
        # An additive mask, made once: SDPA would turn a boolean one into this in every layer.
        bias = torch.where(self.valid[r0:r1, None, None, :kv_len], self._attend, self._ignore)
        if self._step is not None:
            hidden = self._step(embeds, bias, self.pid[r0:r1, None], self.cache)
        else:
            hidden = self._forward(embeds, bias, self.pid[r0:r1, None])
        self._sample(slice(lo, hi), hidden)
        self.pos[r0:r1] += live_rows
        self.pid[r0:r1] += live_rows

    def _free_memory(self) -> None:
        gc.collect()
        if self.checkpoint.device.type == "cuda":
            torch.cuda.empty_cache()

    def _report(self, only: Sequence[Request] | None = None) -> None:
        if self.on_progress is None:
            return
        runs = self._running.values() if only is None else [self._running[r.id] for r in only]
        for run in runs:
            tokens = None
            if self.preview_every and (run.step % self.preview_every == 0) and run.step < self.n_tokens:
                tokens = self.tokens[run.slots, : run.step].cpu()
            self.on_progress(StepReport(run.request, run.step, self.n_tokens, tokens))

    def _collect(self) -> list[Result]:
        done = [run for run in self._running.values() if run.step >= self.n_tokens]
        return [self._release(run, "done") for run in done]

    def _release(self, run: _Running, status: str, error: str | None = None) -> Result:
        del self._running[run.request.id]
        index = torch.tensor(run.slots, device=self.checkpoint.device)
        self.live[index] = False
        tokens = self.tokens[index].cpu() if status == "done" else None
        logits = self.logits[index].cpu() if self.logits is not None and status == "done" else None
        # A free row keeps stepping with the batch: back to one valid position, so it reads no stale cache.
        rows = _rows_of(index)
        self.valid[rows] = False
        self.valid[rows, 0] = True
        self.pos[rows] = 0
        self.pid[rows] = 0
        for s in run.slots:
            self._host_pos[2 * s] = self._host_pos[2 * s + 1] = 0
        self._free = sorted(self._free + run.slots)
        return Result(run.request, tokens, status=status, error=error, logits=logits)

    def cancel(self, request_id: str) -> Result | None:
        """Stop a running request; its slots are free for the next step."""
        run = self._running.get(request_id)
        return None if run is None else self._release(run, "cancelled")


def generate(
    checkpoint: Checkpoint,
    requests: Iterable[Request],
    *,
    max_prompt_tokens: int = 256,
    preview_every: int = 0,
    record_logits: bool = False,
    on_progress: Callable[[StepReport], None] | None = None,
    graphs: bool = False,
) -> list[Result]:
    """Generate all requests in one batch; the KV cache is freed before this returns (decode after).

    The cache is sized for exactly this batch (longest prompt plus the image), so attention reads no
    empty slots; a one-shot batch is not worth capturing as CUDA graphs unless asked.
    """
    requests = list(requests)
    longest = max((len(encode_prompt(checkpoint.processor, r.prompt)) for r in requests), default=1)
    with torch.inference_mode():
        engine = Engine(
            checkpoint,
            max_batch_images=max(1, sum(r.num_images for r in requests)),
            max_prompt_tokens=min(max_prompt_tokens, longest),
            preview_every=preview_every,
            record_logits=record_logits,
            on_progress=on_progress,
            graphs=graphs,
        )
        results = {result.request.id: result for result in engine.add(requests)}
        while engine.busy:
            results.update((result.request.id, result) for result in engine.step())
    return [results[r.id] for r in requests]
