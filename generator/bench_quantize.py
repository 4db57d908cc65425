"""`janus-bot bench --quantize int8|int4`: the engine on quantized weights against the same model unquantized.

One random model of the preset; a copy of it shares every tensor but the language model's linear weights,
which it holds quantized. Printed: the quantized layers' bytes against bf16, images/s of both engines on
the workload (interleaved runs, the median), and how far the quantized model's output moves from the
unquantized one's: greedy tokens run free (share of steps equal), and guided logits teacher-forced on the
unquantized model's greedy tokens (mean and largest difference, same argmax). Random weights say nothing
about picture quality.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics

import torch

from generator.bench import PROMPTS, Measurement, _format, _median, _return_freed_memory, _rss, run_engine
from generator.checkpoint import Checkpoint
from generator.engine import Request, generate
from generator.quantize import quantize_layer, quantized_share, tensor_bytes


def quantized_copy(checkpoint: Checkpoint, mode: str) -> Checkpoint:
    """The checkpoint with its language model's layers quantized, every other tensor shared with it (no copy)."""
    model = checkpoint.model
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}  # deepcopy hands these back as they are
    copied = copy.deepcopy(model, memo=shared)
    for layer in copied.model.language_model.layers:
        quantize_layer(layer, mode)  # new weights on the copy's modules; the original's stay
    return Checkpoint(copied, checkpoint.processor, f"{checkpoint.name} {mode}", quantize=mode)


def weight_bytes(checkpoint: Checkpoint) -> int:
    """Bytes of every parameter and buffer of the model (quantized ones at their stored size)."""
    model = checkpoint.model
    return sum(tensor_bytes(t) for t in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values())


def _allocated(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device)
    _return_freed_memory()
    return _rss()


def run_quantized(args: argparse.Namespace, checkpoint: Checkpoint, workloads: list[tuple[int, int]]) -> int:
    mode = args.quantize
    quantized = quantized_copy(checkpoint, mode)
    share = quantized_share(quantized.model.model.language_model)
    print(f"weights: {share.quantized_bytes / 2**20:.2f} MiB ({share.ratio:.2f} of bf16) for the language model's "
          f"quantized layers ({share.layers} of {share.total_layers} linear layers; {share.bf16_bytes / 2**20:.2f} "
          f"MiB in bf16); whole model {weight_bytes(quantized) / 2**20:.0f} MiB, unquantized "
          f"{weight_bytes(checkpoint) / 2**20:.0f} MiB", flush=True)
    for requests_n, images in workloads:
        requests = [Request(PROMPTS[i % len(PROMPTS)], num_images=images, cfg=5.0, temperature=1.0, seed=i,
                            id=f"bench{i}") for i in range(requests_n)]
        speed(args, {"engine": checkpoint, f"engine {mode}": quantized}, requests)
        agreement(checkpoint, quantized, requests)
    print("Random weights say nothing of picture quality: on a GPU, with the published weights, compare pictures "
          "(and a prompt-adherence score) of the same prompts and seeds in each mode.")
    return 0


def speed(args: argparse.Namespace, checkpoints: dict[str, Checkpoint], requests: list[Request]) -> None:
    """Each checkpoint's engine on the workload, interleaved runs; peak memory as its own weights plus what the
    engine allocated over both models."""
    total = sum(r.num_images for r in requests)
    max_images = args.max_batch_images or total
    device = next(iter(checkpoints.values())).device
    own = {name: weight_bytes(checkpoint) for name, checkpoint in checkpoints.items()}
    for checkpoint in checkpoints.values():  # warm-up, untimed: kernels for these shapes loaded and chosen
        run_engine(checkpoint, requests, [0.0] * len(requests), max_batch_images=max_images, graphs=args.graphs,
                   compile=args.compile)
    runs: dict[str, list[Measurement]] = {name: [] for name in checkpoints}
    for _ in range(args.repeat):
        for name, checkpoint in checkpoints.items():
            before = _allocated(device)
            m = run_engine(checkpoint, requests, [0.0] * len(requests), max_batch_images=max_images,
                           graphs=args.graphs, compile=args.compile)
            runs[name].append(dataclasses.replace(m, name=name, peak_bytes=own[name] + m.peak_bytes - before))
    rounds = f", median of {args.repeat} interleaved runs" if args.repeat > 1 else ""
    print(f"\n{len(requests)} requests x {requests[0].num_images} images{rounds}", flush=True)
    print(f"{'method':<13} {'images/s':>9} {'ms/step':>10} {'p50 lat s':>10} {'p95 lat s':>10} {'peak MiB':>11}")
    results = {name: _median(measured) for name, measured in runs.items()}
    for result in results.values():
        print(_format(result), flush=True)
    base, mode = results["engine"], list(results.values())[1]
    print(f"{mode.name} vs unquantized: {mode.images_per_s / base.images_per_s:.2f} of the images/s "
          f"(peak MiB: the model's own weights plus what the engine allocated)", flush=True)


def agreement(checkpoint: Checkpoint, quantized: Checkpoint, requests: list[Request]) -> None:
    """Greedy tokens of both models run free, then the quantized one teacher-forced on the unquantized tokens."""
    greedy = [dataclasses.replace(r, temperature=0.0, id=f"{r.id}-greedy") for r in requests]
    base = generate(checkpoint, greedy, record_logits=True)
    free = generate(quantized, greedy)
    forced = [dataclasses.replace(r, prefix=b.tokens, id=f"{r.id}-forced") for r, b in zip(greedy, base)]
    taught = generate(quantized, forced, record_logits=True)
    tokens = torch.cat([b.tokens for b in base])  # [images, T]
    equal = torch.cat([f.tokens for f in free]) == tokens
    first = [int(row.logical_not().nonzero()[0]) if not row.all() else row.numel() for row in equal]
    want = torch.cat([b.logits for b in base])  # [images, T, V] guided logits
    got = torch.cat([t.logits for t in taught])
    error = (got - want).abs()
    same = (got.argmax(dim=-1) == tokens).float().mean()
    steps = tokens.shape[1]
    print(f"agreement, greedy, {tokens.shape[0]} images of {steps} steps: tokens equal at {equal.float().mean():.1%} "
          f"of steps run free (first difference at step {statistics.median(first):.0f} of {steps}, median); "
          f"teacher-forced on the unquantized tokens: guided logits off by {error.mean():.4f} on average, "
          f"{error.max():.4f} at most (their spread: {want.std():.3f}), same argmax at {same:.1%} of steps",
          flush=True)

