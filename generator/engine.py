"""Batched classifier-free-guidance sampling for Janus: many requests, one forward pass per step.

Every image owns two rows of a preallocated KV cache (conditional, unconditional), so requests of
different prompt lengths share a step and a request can join while others are half-way. The loop:
admit (take free image slots), prefill (each request's two prompt rows, copied to all its images' rows),
sample (guided logits, one counter-based random number per image and step), step (every image's last
token in, the next one out), collect (finished requests leave, their slots free for the next step).

The unconditional row is the prompt padded out, or a negative prompt formatted as a prompt is. A request
may start from a source grid (a prefix for variations, a picture's codes for image prompts and Vary
(Region)): a kept cell is fed the source's code instead of the sample, with the same random stream.

A request checked against the engine (its prompt rows, its kept cells) is in `request`, sampling in
`sampling`, the cache and the per-slot tensors in `slots`, the own Llama decode step in `llama_step`,
static shapes, CUDA graphs and torch.compile in `graphs`.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from generator.checkpoint import Checkpoint
from generator.graphs import KV_BLOCK, StepGraphs
from generator.llama_step import LlamaStep
from generator.prompt import guidance_rows, left_padded
from generator.request import Admission, Request, RequestError, Result, StepReport, admit
from generator.sampling import guided_logits, image_key, sample, uniform
from generator.slots import SlotCache, SlotState, auto_batch_images, pairs, rows_of

log = logging.getLogger(__name__)

OUT_OF_MEMORY = "The GPU ran out of memory for this request; try fewer images."
__all__ = ["Admission", "Engine", "Request", "RequestError", "Result", "StepReport", "generate"]


@dataclass
class _Running:
    request: Request
    slots: list[int]  # image slots, in image order
    step: int  # tokens sampled so far, for every image of the request
    write_pos: int  # its rows' cache write position, kept on the host: a step's cache length without a device read
    end: int  # steps it takes: after its last sampled cell the rest are kept cells, which need no forward
    kept: torch.Tensor | None  # [num_images, num_image_tokens] the kept cells' codes, -1 elsewhere (previews)


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
        self.checkpoint, self.model, self.processor = checkpoint, checkpoint.model, checkpoint.processor
        self.n_tokens = checkpoint.num_image_tokens
        lm = self.model.model.language_model
        why = LlamaStep.unsupported(lm)
        own_step = LlamaStep(lm) if why is None else None  # before sizing the batch: it may move weights
        if why is not None:
            log.info("decoding through transformers' forward: the engine's own step does not cover %s", why)
        self.max_batch_images = max_batch_images or auto_batch_images(checkpoint, max_prompt_tokens)
        self.max_prompt_tokens, self.max_len = max_prompt_tokens, max_prompt_tokens + self.n_tokens
        self.preview_every, self.on_progress = preview_every, on_progress
        self.pad_id = self.processor.tokenizer.pad_token_id
        self.cache = SlotCache.for_model(checkpoint, 2 * self.max_batch_images, self.max_len)
        codebook = self.model.config.vq_config.num_embeddings if record_logits else None
        device = checkpoint.device
        self.state = SlotState.zeros(self.max_batch_images, self.max_len, self.n_tokens, device,
                                     record_logits_of=codebook)
        # An additive attention mask is made once a step from these: SDPA would convert a boolean one every layer.
        self._attend = torch.zeros((), dtype=checkpoint.dtype, device=device)
        self._ignore = torch.full((), -math.inf, dtype=checkpoint.dtype, device=device)
        self._free = list(range(self.max_batch_images))
        self._running: dict[str, _Running] = {}
        self.graphs = StepGraphs(own_step, self.max_batch_images, self.max_len)
        if compile:
            self.compile_step()
        if device.type == "cuda" if graphs is None else graphs:
            self.graphs.capture(lambda hi, kv_len: self._decode(0, hi, kv_len), device)

    def compile_step(self) -> None:
        """The own step through torch.compile, warmed up at the largest batch (no slot live yet)."""
        self.graphs.compile(lambda: self._decode(0, self.max_batch_images, min(self.max_len, KV_BLOCK)))

    @property
    def decode_path(self) -> str:
        return self.graphs.path

    @property
    def free_images(self) -> int:
        return len(self._free)

    @property
    def busy(self) -> bool:
        return bool(self._running)

    # -- admit and prefill --

    def validate(self, request: Request) -> Admission:
        """Check a request against this engine; returns its prompt rows and kept cells."""
        return admit(request, self.processor, max_images=self.max_batch_images,
                     max_prompt_tokens=self.max_prompt_tokens, n_tokens=self.n_tokens,
                     codebook=self.model.model.generation_embeddings.num_embeddings)

    def add(self, requests: Sequence[Request]) -> list[Result]:
        """Prefill requests into free slots; they sample their first token now and join the next step.

        Invalid requests raise RequestError before anything changes. Returns the requests that could not
        start (out of memory even when prefilled alone), as failed results.
        """
        if not requests:
            return []
        admissions = [self.validate(r) for r in requests]
        need = sum(r.num_images for r in requests)
        if need > len(self._free):
            raise RequestError(f"{need} images do not fit in {len(self._free)} free slots.")
        return self._admit(list(requests), admissions)

    def _admit(self, requests: list[Request], admissions: list[Admission]) -> list[Result]:
        slots_of = [[self._free.pop(0) for _ in range(r.num_images)] for r in requests]
        try:
            length = self._prefill(requests, slots_of, admissions)
        except torch.OutOfMemoryError:
            taken = [s for slots in slots_of for s in slots]
            self._free = sorted(self._free + taken)
            self.state.live[torch.tensor(taken, device=self.state.live.device)] = False
            self._free_memory()
            if len(requests) == 1:
                log.warning("out of memory prefilling request %s alone; failing it", requests[0].id)
                return [Result(requests[0], None, status="failed", error=OUT_OF_MEMORY)]
            log.warning("out of memory prefilling %d requests together; adding them one by one", len(requests))
            return [failed for request, admission in zip(requests, admissions)
                    for failed in self._admit([request], [admission])]
        for request, slots, admission in zip(requests, slots_of, admissions):
            end, kept = admission.plan(request, self.n_tokens, every_step=self.state.logits is not None)
            self._running[request.id] = _Running(request, slots, step=1, write_pos=length, end=end, kept=kept)
        self._report(requests)
        return []

    def _prefill(self, requests: list[Request], slots_of: list[list[int]], admissions: list[Admission]) -> int:
        """Run each request's two prompt rows once, into all its images' cache rows; the padded prompt length.

        Rows of different lengths (prompts, negative prompts) are left-padded; each row's positions start at 0.
        """
        device = self.checkpoint.device
        rows = [ids for admission in admissions for ids in (admission.cond, admission.uncond)]
        ids, mask = (t.to(device) for t in left_padded(rows, self.pad_id))  # [2 requests, L]
        slots = torch.tensor([s for group in slots_of for s in group], dtype=torch.long, device=device)
        owner = torch.tensor([i for i, group in enumerate(slots_of) for _ in group], device=device)
        source = rows_of(owner)  # the prompt row each cache row copies
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        images = [(r, i) for r, group in zip(requests, slots_of) for i in range(len(group))]
        keys = torch.tensor([image_key(r.seed, i) for r, i in images], device=device)
        self.state.admit(
            slots, source, mask, position_ids,
            cfg=torch.tensor([r.cfg for r, _ in images], dtype=torch.float32, device=device),
            temperature=torch.tensor([r.temperature for r, _ in images], dtype=torch.float32, device=device),
            # Every step's random number, drawn now: a step reads one instead of hashing it in ~30 small kernels.
            uniforms=uniform(keys[:, None], torch.arange(self.n_tokens, device=device)),
        )
        for admission, group in zip(admissions, slots_of):
            if admission.codes is not None:
                self.state.force(group, admission.codes, admission.keep)

        length = ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=device)
        attend = (causal & mask[:, None, :]) | eye  # pad queries see themselves: finite states, no NaN
        self.cache.prefill(rows_of(slots), source)
        hidden = self._forward(self.model.get_input_embeddings()(ids), attend[:, None], position_ids)
        self.state.live[slots] = True
        self._sample(slots, hidden[source])
        return length

    # -- sample and step --

    def _forward(self, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        out = self.model.model.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, cache=self.cache, use_cache=True
        )
        return out.last_hidden_state[:, -1]  # [rows, H]

    def _sample(self, slots: torch.Tensor | slice, hidden: torch.Tensor) -> None:
        """Guided logits and one token for each image slot in `slots` from its two rows' states.  # hidden [2n, H]"""
        state = self.state
        logits = self.model.model.generation_head(hidden).float()
        guided = guided_logits(logits[0::2], logits[1::2], state.cfg[slots])  # [n, V]
        steps = state.sampled[slots]
        at = steps.clamp(max=self.n_tokens - 1)[:, None]
        # A kept cell is fed its code; its random number goes unused, so later cells draw what they would alone.
        token = sample(guided, state.temperature[slots], state.uniforms[slots].gather(1, at)[:, 0])
        forced = state.forced_tokens[slots].gather(1, at)[:, 0]
        state.record(slots, at, torch.where(state.forced_mask[slots].gather(1, at)[:, 0], forced, token), guided)

    def step(self) -> list[Result]:
        """One token for every running image; returns the requests that finished (or failed)."""
        finished = self._collect()
        if not self._running:
            return finished
        runs = self._running.values()
        hi = max(s for run in runs for s in run.slots) + 1
        finished += self._decode_split(0, hi, max(run.write_pos for run in runs) + 1)
        for run in self._running.values():
            run.step += 1
            run.write_pos += 1
        self._report()
        return finished + self._collect()

    def _decode_split(self, lo: int, hi: int, kv_len: int) -> list[Result]:
        """Decode image slots [lo, hi); out of memory splits the range, and fails a request only alone."""
        try:
            if self.graphs.static and lo == 0:  # the halves of a split run eagerly at their own shapes
                hi, kv_len = self.graphs.shape_for(hi, kv_len)
                if self.graphs.replay(hi, kv_len):
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
        state, rows = self.state, slice(2 * lo, 2 * hi)
        last = state.tokens[lo:hi].gather(1, (state.sampled[lo:hi] - 1).clamp(min=0)[:, None])  # [n, 1]
        # Both rows of an image feed the same token: its embedding is computed once and used twice.
        embeds = pairs(self.model.prepare_embeddings_for_image_generation(last))  # [2n, 1, H]
        state.attention_mask[rows].scatter_(1, state.write_pos[rows, None], True)
        self.cache.decode(rows.start, rows.stop, state.write_pos[rows], kv_len)
        bias = torch.where(state.attention_mask[rows, None, None, :kv_len], self._attend, self._ignore)
        position_ids = state.position_ids[rows, None]
        if self.graphs.step is not None:
            hidden = self.graphs.step(embeds, bias, position_ids, self.cache)
        else:
            hidden = self._forward(embeds, bias, position_ids)
        self._sample(slice(lo, hi), hidden)
        state.advance(rows, pairs(state.live[lo:hi].long()))

    # -- report and collect --

    def _report(self, only: Sequence[Request] | None = None) -> None:
        if self.on_progress is None:
            return
        runs = self._running.values() if only is None else [self._running[r.id] for r in only]
        for run in runs:
            tokens, kept = None, None
            first = run.step == 1 and run.kept is not None  # the kept cells show at once
            if self.preview_every and (run.step % self.preview_every == 0 or first) and run.step < run.end:
                tokens, kept = self.state.tokens[run.slots, : run.step].cpu(), run.kept
            self.on_progress(StepReport(run.request, run.step, self.n_tokens, tokens, kept))

    def _collect(self) -> list[Result]:
        done = [run for run in self._running.values() if run.step >= run.end]
        return [self._release(run, "done") for run in done]

    def _release(self, run: _Running, status: str, error: str | None = None) -> Result:
        del self._running[run.request.id]
        index = torch.tensor(run.slots, device=self.checkpoint.device)
        done = status == "done"
        tokens = self.state.finished_tokens(index).cpu() if done else None
        logits = self.state.logits[index].cpu() if self.state.logits is not None and done else None
        self.state.release(index)
        self._free = sorted(self._free + run.slots)
        return Result(run.request, tokens, status=status, error=error, logits=logits)

    def cancel(self, request_id: str) -> Result | None:
        """Stop a running request; its slots are free for the next step."""
        run = self._running.get(request_id)
        return None if run is None else self._release(run, "cancelled")

    def _free_memory(self) -> None:
        gc.collect()
        if self.checkpoint.device.type == "cuda":
            torch.cuda.empty_cache()


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
    longest = max((len(ids) for r in requests for ids in guidance_rows(checkpoint.processor, r.prompt, r.negative)),
                  default=1)
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
