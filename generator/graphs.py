"""How a decode step runs fast: static shapes, one CUDA graph per shape, and optionally torch.compile first.

At static shapes a step runs at a power-of-two number of image slots and a whole number of KV blocks, so
a handful of shapes cover every batch; on CUDA each shape is captured once as a CUDA graph (a 7B step is
hundreds of small kernels, and launching them one by one costs more than running them). Free slots and
empty cache blocks step along; their rows are masked, so no token notices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch.fx.experimental import _config as fx_config

from generator.checkpoint import first_line
from generator.llama_step import LlamaStep

log = logging.getLogger(__name__)

KV_BLOCK = 64  # static-shape steps attend over the cache in whole blocks of this many positions

Decode = Callable[[int, int], None]  # decode(image slots [0, hi), kv_len): one step at that shape


class StepGraphs:
    """The language model's part of a decode step (`step`), and the graphs captured of whole steps."""

    def __init__(self, step: LlamaStep | None, max_images: int, max_len: int) -> None:
        self.step: Callable[..., torch.Tensor] | None = step  # None: through transformers' forward
        self.eager_step = step
        self.max_images = max_images
        self.max_len = max_len
        self.static = False  # steps run at `shapes()` only
        self.captured: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}

    def shapes(self) -> list[tuple[int, int]]:
        """Every (image slots, cache length) a static step can run at, largest first."""
        j = self.max_images
        slots = sorted({min(1 << i, j) for i in range(j.bit_length() + 1)})
        lengths = sorted({min(k, self.max_len) for k in range(KV_BLOCK, self.max_len + KV_BLOCK, KV_BLOCK)})
        return [(s, k) for s in reversed(slots) for k in reversed(lengths)]

    def shape_for(self, hi: int, kv_len: int) -> tuple[int, int]:
        """The static shape that covers slots [0, hi) and `kv_len` cache positions."""
        slots = min(self.max_images, 1 << (hi - 1).bit_length())
        return slots, min(self.max_len, -(-kv_len // KV_BLOCK) * KV_BLOCK)

    def replay(self, hi: int, kv_len: int) -> bool:
        """Replay the graph captured at this shape; False when there is none."""
        graph = self.captured.get((hi, kv_len))
        if graph is None:
            return False
        graph.replay()
        return True

    @property
    def path(self) -> str:
        """How a decode step runs, in words: which step, compiled or not, captured or not."""
        step = "transformers' forward" if self.step is None else "own step"
        if self.step is not self.eager_step:
            step += ", compiled"
        return step + (f", {len(self.captured)} CUDA graphs" if self.captured else "")

    def compile(self, warm_up: Callable[[], None]) -> None:
        """Run the own step through torch.compile (inductor), or stay eager with one log line.

        The whole step is one graph (`fullgraph`: a graph break inside its loop over layers would leave
        every layer eager), cache writes included. One dynamic-shape compile covers every batch and cache
        length: sizes that happen to be equal in the warm-up step are not taken to be equal always
        (`use_duck_shape`). Inductor keeps what it built on disk for the next start. `warm_up` runs a step
        that touches no live slot, so the compile happens now rather than in a request.
        """
        if self.eager_step is None:
            log.warning("torch.compile needs the engine's own decode step; decoding through transformers")
            return
        self.step = torch.compile(self.eager_step, dynamic=True, fullgraph=True)
        try:
            with torch.inference_mode(), fx_config.patch(use_duck_shape=False):
                warm_up()
        except Exception as err:  # any compiler failure means eager
            log.warning("torch.compile unavailable (%s); decoding eagerly", first_line(err))
            self.step = self.eager_step
            return
        log.info("decode step compiled by torch.compile")

    def capture(self, decode: Decode, device: torch.device) -> None:
        """Switch to static shapes; on CUDA capture one graph per shape, or fall back to eager with one log line.

        No slot is live yet, so the warm-up steps change nothing a request will read.
        """
        self.static = True
        if device.type != "cuda":
            return  # the same shapes, run eagerly: what the CPU tests check
        try:
            pool = torch.cuda.graph_pool_handle()
            stream = torch.cuda.Stream(device)
            with torch.inference_mode():
                for hi, kv_len in self.shapes():  # largest first: later graphs fit in its memory
                    stream.wait_stream(torch.cuda.current_stream(device))
                    with torch.cuda.stream(stream):
                        decode(hi, kv_len)
                    torch.cuda.current_stream(device).wait_stream(stream)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool):
                        decode(hi, kv_len)
                    self.captured[hi, kv_len] = graph
                for graph in self.captured.values():  # a graph's first launch uploads it: not in a request's time
                    graph.replay()
            torch.cuda.synchronize(device)
        except Exception as err:  # any capture failure means eager
            self.captured.clear()
            torch.cuda.synchronize(device)
            if self.step is not self.eager_step:  # graphs of the eager step beat a compiled step without them
                log.warning("CUDA graphs of the compiled step failed (%s); capturing the eager step",
                            first_line(err))
                self.step = self.eager_step
                return self.capture(decode, device)
            log.warning("CUDA graphs unavailable (%s); decoding eagerly", first_line(err))
            self.static = False
            return
        log.info("captured %d CUDA graphs of the decode step", len(self.captured))
