"""`janus-bot bench --serving`: the generator process, driven through its protocol, against the token-only engine.

A random checkpoint of the preset is saved with `make_model` and `python -m generator serve` spawned on it, as
the bot spawns it; the requests arrive staggered, previews on, and come back as PNGs. The same workload then
runs through an engine in this process, tokens only. The process writes one line per decode step (its hidden
`--step-log`); a step gap is the time from one step's start to the next one's while jobs are running (a
picture made inside the step loop stalls every job for its length), compared with the median gap.

With `--describe N` the same workload then runs without and with N describe jobs (a picture to 4 prompts, at
most 64 tokens each, as the bot asks by default) arriving through it, pair after pair: images/s both ways, and
how long the describe calls held the steps up (the process logs each call's start and end beside the steps).
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
    describe_latencies: list[float] = field(default_factory=list)  # each describe job's arrival -> its Described
    describe_calls: list[tuple[float, int]] = field(default_factory=list)  # (seconds, rows) of each describe call

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


def serve_workload(process: GeneratorUnderTest, step_log: Path, requests: list[Request], arrivals: list[float],
                   describes: Sequence[tuple[float, wire.Describe]] = ()) -> Served:
    """Send each request (and describe job) at its arrival time; collect events until every one has ended."""
    sent: dict[str, float] = {}
    ended: dict[str, float] = {}
    progress = previews = pngs = 0
    pending: list[tuple[float, wire.Work]] = sorted(
        [(a, _generate(r, r.id)) for a, r in zip(arrivals, requests)] + list(describes), key=lambda pair: pair[0])
    jobs = len(pending)
    start = time.monotonic()
    while len(ended) < jobs:
        while pending and start + pending[0][0] <= time.monotonic():
            arrival, message = pending.pop(0)
            process.send(message)
            sent[message.job_id] = start + arrival
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
        elif isinstance(event, wire.Described):
            ended[event.job_id] = at
        elif isinstance(event, wire.JobFailed | wire.JobCancelled):
            raise RuntimeError(f"job {event.job_id} ended as {event.type}: {getattr(event, 'reason', '')}")
    seconds = max(ended[r.id] for r in requests) - start  # the image workload's time
    latencies = [ended[r.id] - sent[r.id] for r in requests]
    return Served(sum(r.num_images for r in requests), seconds, latencies, progress, previews, pngs,
                  step_gaps(step_log, since=start), [ended[d.job_id] - sent[d.job_id] for _, d in describes],
                  describe_calls(step_log, since=start))


def step_gaps(step_log: Path, since: float) -> list[float]:
    """Start-to-start times of consecutive decode steps logged after `since`, leaving out idle waits (a describe
    call between two steps counts in their gap)."""
    steps = []
    for line in step_log.read_text().splitlines():
        if line.startswith("describe "):
            continue
        started, _ended, busy = line.split()
        if float(started) >= since:
            steps.append((float(started), busy == "1"))
    return [after[0] - before[0] for before, after in zip(steps, steps[1:]) if before[1]]


def describe_calls(step_log: Path, since: float) -> list[tuple[float, int]]:
    """(seconds, rows) of each describe call logged after `since`."""
    calls = []
    for line in step_log.read_text().splitlines():
        if line.startswith("describe "):
            _, started, ended, rows = line.split()
            if float(started) >= since:
                calls.append((float(ended) - float(started), int(rows)))
    return calls


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
        image_size = checkpoint.image_size
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
        if args.describe:
            pairs = describe_pairs(process, step_log, requests, arrivals, args.describe, args.repeat, image_size)

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
    if args.describe:
        print_describe_pairs(pairs, args.describe)
    return 0


DESCRIBE_COUNT, DESCRIBE_TEMPERATURE = 4, 0.7  # the bot's [describe] defaults; at most 64 tokens a prompt


def describe_picture(size: int) -> bytes:
    """A PNG to describe: two shapes on a background, at the model's size."""
    from PIL import Image, ImageDraw

    from generator.codec import encode_image

    picture = Image.new("RGB", (size, size), (40, 90, 200))
    draw = ImageDraw.Draw(picture)
    draw.ellipse((size // 8, size // 8, size // 2, size // 2), fill=(220, 40, 40))
    draw.rectangle((size // 2, size // 2, size - size // 8, size - size // 8), fill=(250, 220, 40))
    return encode_image(picture)


def describe_pairs(process: GeneratorUnderTest, step_log: Path, requests: list[Request], arrivals: list[float],
                   n: int, repeat: int, image_size: int) -> list[tuple[Served, Served]]:
    """The workload without, then with, `n` describe jobs arriving evenly over the first 80% of the time the run
    without them took; `repeat` pairs."""
    picture = describe_picture(image_size)
    pairs = []
    for run in range(repeat):
        without = serve_workload(process, step_log, requests, arrivals)
        every = 0.8 * without.seconds / n
        describes = [((j + 0.5) * every, wire.Describe(f"describe{run}-{j}", picture, DESCRIBE_COUNT,
                                                       DESCRIBE_TEMPERATURE, seed=j)) for j in range(n)]
        pairs.append((without, serve_workload(process, step_log, requests, arrivals, describes)))
    return pairs


def print_describe_pairs(pairs: list[tuple[Served, Served]], n: int) -> None:
    """Images/s without and with describes (the median of each), and what the describe calls cost the steps."""
    from generator.bench import _percentile

    def median(runs: list[Served]) -> Served:
        return sorted(runs, key=lambda s: s.seconds)[(len(runs) - 1) // 2]

    without, with_ = median([p[0] for p in pairs]), median([p[1] for p in pairs])
    runs = f"median of {len(pairs)} interleaved runs" if len(pairs) > 1 else "one run each"
    print(f"\ndescribe: {n} jobs x {DESCRIBE_COUNT} prompts (temperature {DESCRIBE_TEMPERATURE}, at most 64 tokens) "
          f"arriving through the same workload; {runs}")
    print(f"{'method':<17} {'images/s':>9} {'p50 lat s':>10} {'p95 lat s':>10} {'median gap ms':>14} "
          f"{'longest gap ms':>15}")
    for name, served in (("serving", without), ("serving+describe", with_)):
        gaps = served.step_gaps or [math.nan]
        print(f"{name:<17} {served.images_per_s:9.3f} {_percentile(served.latencies, 0.5):10.2f} "
              f"{_percentile(served.latencies, 0.95):10.2f} {statistics.median(gaps) * 1000:14.1f} "
              f"{max(gaps) * 1000:15.1f}")
    calls = with_.describe_calls or [(math.nan, 0)]
    seconds = [c[0] for c in calls]
    print(f"describe jobs: p50 latency {_percentile(with_.describe_latencies, 0.5):.2f} s, longest "
          f"{max(with_.describe_latencies):.2f} s; {len(with_.describe_calls)} calls of "
          f"{statistics.mean(c[1] for c in calls):.1f} rows on average, median {statistics.median(seconds) * 1000:.0f} "
          f"ms, longest {max(seconds) * 1000:.0f} ms; {sum(seconds):.2f} s of the run's {with_.seconds:.2f} s")
    ratios = sorted(w.images_per_s / wo.images_per_s for wo, w in pairs)
    print(f"longest step gap with describes: {max(with_.step_gaps or [math.nan]) * 1000:.0f} ms, the longest "
          f"describe call {max(seconds) * 1000:.0f} ms")
    print(f"images/s with describes vs without: {ratios[(len(ratios) - 1) // 2]:.2f}", flush=True)
