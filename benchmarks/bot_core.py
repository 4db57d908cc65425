"""Bot core overhead: submit-to-done latency and jobs/s through service, scheduler and store, no model.

    .venv/bin/python benchmarks/bot_core.py [--jobs 1000] [--users 50] [--count 4]

A no-op generator answers every Generate at once (started, one progress, done with tiny PNGs and full
576-token grids), so what is measured is the bot: validation, limits, SQLite writes (WAL), the fair
scheduler, PNG grids and image files, and event delivery to handles.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.config import Settings  # noqa: E402
from bot.jobs import FINAL_EVENTS, Done, Requester  # noqa: E402
from bot.local_queue import LocalQueue  # noqa: E402
from bot.service import Service  # noqa: E402
from bot.store import Store  # noqa: E402
from generator import protocol as wire  # noqa: E402


class NoopGenerator:
    """Answers each job at once; a real generator spends seconds per job, this spends nothing."""

    def __init__(self, max_batch_images: int) -> None:
        self.max_batch_images = max_batch_images
        out = io.BytesIO()
        Image.new("RGB", (384, 384), (90, 120, 200)).save(out, format="PNG")
        self.png = out.getvalue()
        self.tokens = list(range(576))
        self._events: asyncio.Queue[wire.Message | None] = asyncio.Queue()

    async def start(self) -> wire.Ready:
        return wire.Ready("noop", "cpu", 384, 24, self.max_batch_images)

    async def submit(self, msg: wire.Generate) -> None:
        self._events.put_nowait(wire.JobStarted(msg.job_id))
        self._events.put_nowait(wire.JobProgress(msg.job_id, 576, 576))
        self._events.put_nowait(wire.JobDone(msg.job_id, [self.png] * msg.count, [self.tokens] * msg.count))

    async def cancel(self, job_id: str) -> None:
        pass

    async def close(self) -> None:
        self._events.put_nowait(None)

    async def events(self) -> AsyncIterator[wire.Message]:
        while (message := await self._events.get()) is not None:
            yield message


async def measure(jobs: int, users: int, count: int, data_dir: Path, concurrent: bool) -> tuple[list[float], float]:
    """Per-job submit-to-done seconds and the wall time for all jobs."""
    settings = Settings.model_validate(
        {
            "bot": {"data_dir": str(data_dir), "shutdown_grace_s": 0},
            "limits": {"jobs_per_period": jobs, "max_queued_per_user": jobs, "queue_cap": jobs + 1},
        }
    )
    async with await Store.open(data_dir) as store:
        service = Service(settings, store, LocalQueue(NoopGenerator(max_batch_images=16)))
        await service.start()
        result = await drive([service], jobs, users, count, concurrent)
        await service.close()
    return result


async def drive(services: list[Service], jobs: int, users: int, count: int, concurrent: bool
                ) -> tuple[list[float], float]:
    """Submit `jobs` jobs from `users` users (user u on services[u % len]); each job's seconds and the wall time."""
    latencies: list[float] = []

    async def one(i: int) -> None:
        begin = time.perf_counter()
        user = i % users
        service = services[user % len(services)]
        handle = await service.submit(Requester("bench", "s", "c", f"u{user}"), f"prompt {i}", count=count)
        async for event in handle:
            if isinstance(event, FINAL_EVENTS):
                assert isinstance(event, Done), event
        latencies.append(time.perf_counter() - begin)

    begin = time.perf_counter()
    if concurrent:
        await asyncio.gather(*(one(i) for i in range(jobs)))
    else:
        for i in range(jobs):
            await one(i)
    return latencies, time.perf_counter() - begin


def report(name: str, latencies: list[float], wall: float) -> None:
    ms = sorted(x * 1000 for x in latencies)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    print(f"{name:<36} {len(ms):>5} jobs  p50 {p50:8.1f} ms  p99 {p99:8.1f} ms  {len(ms) / wall:7.1f} jobs/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--count", type=int, default=4, help="images per job (default 4)")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.count} images of 384 px per job")
    with tempfile.TemporaryDirectory() as tmp:
        one_by_one = asyncio.run(measure(args.jobs, args.users, args.count, Path(tmp) / "a", concurrent=False))
        report("one at a time (latency, no queue)", *one_by_one)
        together = asyncio.run(measure(args.jobs, args.users, args.count, Path(tmp) / "b", concurrent=True))
        report(f"all at once from {args.users} users", *together)


if __name__ == "__main__":
    main()
