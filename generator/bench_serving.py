"""`janus-bot bench --serving`: the generator process, driven through its protocol, against the token-only engine.

A random checkpoint of the preset is saved with `make_model` and `python -m generator serve` spawned on it, as
the bot spawns it; the requests arrive staggered, previews on, and come back as PNGs. The same workload then
runs through an engine in this process, tokens only. The process writes one line per decode step (its hidden
`--step-log`); a step gap is the time from one step's start to the next one's while jobs are running (a
picture made inside the step loop stalls every job for its length), compared with the median gap.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from generator import protocol as wire
from generator.checkpoint import load_checkpoint
from generator.engine import Request
from generator.presets import Preset, make_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
TIMEOUT_S = 600.0  # longest wait for one event; a 7B model loading on a slow disk takes minutes


@dataclass
class Served:
    """One workload through the generator process."""

    images: int
    seconds: float  # first request sent -> last final event
    latencies: list[float]  # each request's arrival -> its Done
    progress: int  # Progress events
    previews: int  # of them with a preview
    pngs: int  # PNGs in the Done events
    step_gaps: list[float]  # start to start of consecutive decode steps while jobs ran, seconds

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


class GeneratorUnderTest:
    """`python -m generator serve` on a pipe; its events are read by a thread, each with the time it arrived."""

    def __init__(self, command: list[str], stderr: Path) -> None:
        root = str(Path(__file__).resolve().parents[1])  # the generator package this bench imports
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.stderr = stderr
        with stderr.open("wb") as err:
            self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)
        self.events: queue.Queue[tuple[float, wire.Message | None]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put((time.monotonic(), wire.loads(line)))
        self.events.put((time.monotonic(), None))

    def send(self, message: wire.Message) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(wire.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def next(self, timeout: float = TIMEOUT_S) -> tuple[float, wire.Message]:
        at, message = self.events.get(timeout=timeout)
        if message is None:
            tail = self.stderr.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError("the generator process exited: " + " / ".join(tail))
        return at, message

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self.send(wire.Shutdown())
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def generator_process(preset: Preset, device: torch.device, dtype: torch.dtype, max_batch_images: int,
                      preview_every: int | None, compile: bool) -> Iterator[tuple[GeneratorUnderTest, Path, Path]]:
    """A saved random checkpoint of `preset` and a generator process serving it, said Ready."""
    with tempfile.TemporaryDirectory(prefix="janus-bench-") as tmp:
        model_dir = make_model(Path(tmp) / "model", preset, seed=0)
        step_log = Path(tmp) / "steps.log"
        command = [sys.executable, "-m", "generator", "serve", "--model", str(model_dir), "--device", str(device),
                   "--dtype", DTYPE_NAMES.get(dtype, "auto"), "--max-batch-images", str(max_batch_images),
                   "--step-log", str(step_log)]
        if preview_every is not None:
            command += ["--preview-every", str(preview_every)]
        if compile:
            command.append("--compile")
        process = GeneratorUnderTest(command, Path(tmp) / "stderr.log")
        try:
            _, ready = process.next()
            if not isinstance(ready, wire.Ready):
                raise RuntimeError(f"the generator process said {ready.type} before ready")
            yield process, model_dir, step_log
        finally:
            process.close()


def _generate(request: Request, job_id: str) -> wire.Generate:
    return wire.Generate(job_id, request.prompt, request.num_images, request.cfg, request.temperature, request.seed)


def serve_workload(process: GeneratorUnderTest, step_log: Path, requests: list[Request],
                   arrivals: list[float]) -> Served:
    """Send each request at its arrival time; collect events until every request has ended."""
    sent: dict[str, float] = {}
    ended: dict[str, float] = {}
    progress = previews = pngs = 0
    pending = sorted(zip(arrivals, requests), key=lambda pair: pair[0])
    start = time.monotonic()
    while len(ended) < len(requests):
        while pending and start + pending[0][0] <= time.monotonic():
            arrival, request = pending.pop(0)
            process.send(_generate(request, request.id))
            sent[request.id] = start + arrival
        wait = start + pending[0][0] - time.monotonic() if pending else TIMEOUT_S
        try:
            at, event = process.next(timeout=max(0.0, wait))
        except queue.Empty:
            if not pending:
                raise RuntimeError("the generator process sent nothing for a long time") from None
            continue
        if isinstance(event, wire.JobProgress):
            progress += 1
            previews += event.preview is not None and event.preview.startswith(PNG_MAGIC)
        elif isinstance(event, wire.JobDone):
            pngs += sum(image.startswith(PNG_MAGIC) for image in event.images)
            ended[event.job_id] = at
        elif isinstance(event, wire.JobFailed | wire.JobCancelled):
            raise RuntimeError(f"job {event.job_id} ended as {event.type}: {getattr(event, 'reason', '')}")
    seconds = max(ended.values()) - start
    latencies = [ended[r.id] - sent[r.id] for r in requests]
    return Served(sum(r.num_images for r in requests), seconds, latencies, progress, previews, pngs,
                  step_gaps(step_log, since=start))


def step_gaps(step_log: Path, since: float) -> list[float]:
    """Start-to-start times of consecutive decode steps logged after `since`, leaving out idle waits."""
    steps = []
    for line in step_log.read_text().splitlines():
        started, _ended, busy = line.split()
        if float(started) >= since:
            steps.append((float(started), busy == "1"))
    return [after[0] - before[0] for before, after in zip(steps, steps[1:]) if before[1]]


def run_serving(args: argparse.Namespace, preset: Preset, device: torch.device, dtype: torch.dtype) -> int:
    """The serving benchmark: prints images/s for both, their ratio, and the longest step gap."""
    from generator.bench import PROMPTS, _percentile, header, run_engine, run_reference

    requests = [Request(PROMPTS[i % len(PROMPTS)], num_images=args.images, cfg=5.0, temperature=1.0, seed=i,
                        id=f"bench{i}") for i in range(args.requests)]
    total = sum(r.num_images for r in requests)
    max_images = args.max_batch_images or total
    with generator_process(preset, device, dtype, max_images, args.preview_every, args.compile) as (
            process, model_dir, step_log):
        checkpoint = load_checkpoint(model_dir, device=device, dtype=dtype)
        interval = 0.0
        if args.arrival != "together":  # one request every half of a lone request's time, as `bench --arrival`
            run_reference(checkpoint, requests[:1], [0.0])
            interval = run_reference(checkpoint, requests[:1], [0.0]).seconds / 2
        arrivals = [i * interval for i in range(len(requests))]
        previews = {None: "every 5% of the tokens", 0: "off"}.get(args.preview_every,
                                                                  f"every {args.preview_every} steps")
        print(f"{header(args, checkpoint)}\nserving: {args.requests} requests x {args.images} images, "
              + (f"one every {interval:.2f} s" if interval else "arriving together") + f", previews {previews}",
              flush=True)
        run_engine(checkpoint, requests, [0.0] * len(requests), max_batch_images=max_images, graphs=args.graphs,
                   compile=args.compile)  # untimed: the engine's kernels for these shapes, as in `bench`
        engine = run_engine(checkpoint, requests, arrivals, max_batch_images=max_images, graphs=args.graphs,
                            compile=args.compile)
        del checkpoint  # the process serves next, on the same device
        warm = Request(PROMPTS[0], num_images=args.images, seed=99, id="warm-up")
        serve_workload(process, step_log, [warm], [0.0])  # untimed: the process's first job
        served = serve_workload(process, step_log, requests, arrivals)

    print(f"{'method':<13} {'images/s':>9} {'p50 lat s':>10} {'p95 lat s':>10}")
    for name, images_per_s, latencies in (("engine", engine.images_per_s, engine.latencies),
                                          ("serving", served.images_per_s, served.latencies)):
        print(f"{name:<13} {images_per_s:9.3f} {_percentile(latencies, 0.5):10.2f} "
              f"{_percentile(latencies, 0.95):10.2f}")
    print(f"serving: {served.progress} progress reports, {served.previews} with a preview; {served.pngs} PNGs")
    for name, gaps in (("engine", engine.step_gaps), ("serving", served.step_gaps)):
        gaps = gaps or [math.nan]
        print(f"{name} step gaps: median {statistics.median(gaps) * 1000:.1f} ms, 99th percentile "
              f"{_percentile(gaps, 0.99) * 1000:.1f} ms, longest {max(gaps) * 1000:.1f} ms "
              f"({max(gaps) / statistics.median(gaps):.1f} x median)")
    gaps = served.step_gaps or [math.nan]
    print(f"serving vs engine: {served.images_per_s / engine.images_per_s:.2f}")
    print(f"longest step gap: {max(gaps) / statistics.median(gaps):.1f} x median", flush=True)
    return 0
