"""Where one decode step's GPU time goes, for the engine at a static shape (CUDA only).

    python benchmarks/step_profile.py [--preset janus-pro-7b] [--images 16] [--fused] [--norms] [--transformers]
                                      [--brief]

Runs one request of that many images to the end twice (graphs captured as the engine does), then fills
an engine with one request, runs it to half the image, and prints: the captured step's time
(CUDA events over replays), the kernels of the same step run eagerly (grouped by name, per step), and
with --norms the step with transformers' own RMSNorms (the engine uses torch's one-kernel one), with
--fused the step compiled by torch.compile (inductor's fused kernels) and captured the same way, with
--transformers the step through transformers' forward instead of the engine's own `LlamaStep` (generator/llama_step.py).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from generator.bench import bandwidth_of, bytes_per_step
from generator.checkpoint import Checkpoint, fuse_norms
from generator.engine import Engine, Request
from generator.presets import build_model


def replay_ms(fn, steps: int = 40) -> float:
    """Capture fn once as a CUDA graph; mean milliseconds per replay."""
    fn()  # warm-up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    for _ in range(steps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / steps


def kernel_table(fn, steps: int = 5, top: int = 14) -> None:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    times: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            times[event.name] += event.device_time_total / steps
            counts[event.name] += 1
    total = sum(times.values())
    print(f"  eager kernels per step: {sum(counts.values()) // steps}, {total / 1000:.2f} ms of kernel time")
    for name, us in sorted(times.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {us / 1000:7.3f} ms {counts[name] // steps:5d}x  {name[:100]}")


def whole_requests(checkpoint: Checkpoint, images: int, passes: int = 2) -> None:
    """A request of `images` images run to the end through a graph-capturing engine, a few times over."""
    engine = Engine(checkpoint, max_batch_images=images, graphs=True)
    for index in range(passes):
        torch.cuda.synchronize()
        start = time.perf_counter()
        engine.add([Request("a lighthouse at dusk", images, seed=index)])
        steps = 0
        while engine.busy:
            engine.step()
            steps += 1
        torch.cuda.synchronize()
        print(f"  whole request, pass {index + 1}: {(time.perf_counter() - start) * 1000 / steps:.2f} ms/step "
              f"over {steps} steps", flush=True)


def profile(checkpoint: Checkpoint, images: int, fused: bool, norms: bool, through_transformers: bool,
            brief: bool) -> None:
    engine = Engine(checkpoint, max_batch_images=images, graphs=False)
    engine.add([Request("a lighthouse at dusk", images, seed=0)])
    for _ in range(checkpoint.num_image_tokens // 2):
        engine.step()
    [run] = engine._running.values()
    kv_len = engine.graphs.shape_for(images, run.write_pos + 60)[1]
    card = bandwidth_of(checkpoint.device)
    floor = bytes_per_step(checkpoint, images) / card[1] * 1000 if card else float("nan")
    print(f"{checkpoint.name}, {images} images, cache length {kv_len}, floor {floor:.2f} ms/step", flush=True)

    def step() -> None:
        engine._decode(0, images, kv_len)

    print(f"  captured eager kernels: {replay_ms(step):.2f} ms/step", flush=True)
    if not brief:
        kernel_table(step)
    if norms:
        fuse_norms(checkpoint.model, fused=False)
        print(f"  captured eager kernels, transformers' RMSNorm: {replay_ms(step):.2f} ms/step", flush=True)
        fuse_norms(checkpoint.model)
    if through_transformers:
        own, engine.graphs.step = engine.graphs.step, None
        print(f"  captured, through transformers' forward: {replay_ms(step):.2f} ms/step", flush=True)
        if not brief:
            kernel_table(step, top=8)
        engine.graphs.step = own
    if not fused:
        return
    start = time.perf_counter()
    engine.compile_step()  # the engine's `compile` option: the own step as one inductor graph
    torch.cuda.synchronize()
    print(f"  inductor: compile and warm-up {time.perf_counter() - start:.0f} s", flush=True)
    for length in (kv_len, kv_len + 64):
        def fused_step(length: int = length) -> None:
            engine._decode(0, images, length)

        print(f"  captured, compiled, cache length {length}: {replay_ms(fused_step):.2f} ms/step", flush=True)
    if not brief:
        kernel_table(fused_step, top=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="janus-pro-7b")
    parser.add_argument("--images", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--fused", action="store_true", help="also time the inductor-compiled step")
    parser.add_argument("--norms", action="store_true", help="also time it with transformers' own RMSNorms")
    parser.add_argument("--transformers", action="store_true",
                        help="also time it through transformers' forward instead of the engine's own step")
    parser.add_argument("--brief", action="store_true", help="only the captured steps' times")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model, processor = build_model(args.preset, device="cuda", dtype=torch.bfloat16)
    checkpoint = Checkpoint(model, processor, args.preset)
    with torch.inference_mode():
        for images in args.images:
            try:
                if not args.brief:
                    whole_requests(checkpoint, images)
                profile(checkpoint, images, args.fused, args.norms, args.transformers, args.brief)
            except Exception as err:  # report and go on to the next size
                lines = str(err).strip().splitlines()
                print(f"  failed: {type(err).__name__}: " + "\n    ".join(lines[:3] + lines[-12:]), flush=True)


if __name__ == "__main__":
    main()
