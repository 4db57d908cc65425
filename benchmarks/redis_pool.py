"""What the Redis pool costs over the local queue: submit-to-done latency and jobs/s, no model.

    .venv/bin/python benchmarks/redis_pool.py [--jobs 500] [--users 50] [--count 1]

Starts its own redis-server (appendonly yes, appendfsync always or everysec) on a free local port. The same no-op
generator as bot_core.py answers every job at once: locally behind one service, and in the pool behind
two in-process workers (`bot.worker.PoolWorker`) fed by two bot instances, each taking half the users.
So what is measured is the bot and the queue: admission scripts, fair picks, streams, stored results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot_core import NoopGenerator, drive, measure, report  # noqa: E402

from bot.config import Settings  # noqa: E402
from bot.redis_queue import RedisQueue, connect  # noqa: E402
from bot.service import Service  # noqa: E402
from bot.store import Store  # noqa: E402
from bot.worker import PoolWorker  # noqa: E402


@contextlib.contextmanager
def redis_server(directory: Path, fsync: str) -> Iterator[str]:
    """A throwaway redis-server; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                             "--appendonly", "yes", "--appendfsync", fsync, "--save", ""],
                            stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def measure_pool(url: str, jobs: int, users: int, count: int, data_dir: Path,
                       concurrent: bool) -> tuple[list[float], float]:
    """Per-job submit-to-done seconds and the wall time, through two bot instances and two workers."""
    limits = {"jobs_per_period": jobs, "max_queued_per_user": jobs, "queue_cap": jobs + 1, "max_running_per_user": 16}
    stop = asyncio.Event()
    clients = [connect(url) for _ in range(2)]
    workers = [PoolWorker(client, NoopGenerator(16), name=f"w{i}", poll_s=0.1) for i, client in enumerate(clients)]
    running = [asyncio.create_task(worker.run(stop)) for worker in workers]
    async with contextlib.AsyncExitStack() as stack:
        services = []
        for name in ("a", "b"):
            settings = Settings.model_validate({"bot": {"data_dir": str(data_dir / name), "shutdown_grace_s": 0},
                                                "limits": limits})
            store = await stack.enter_async_context(await Store.open(data_dir / name))
            service = Service(settings, store, RedisQueue(connect(url), instance=name, poll_s=0.1))
            await service.start()
            stack.push_async_callback(service.close)
            services.append(service)

        latencies, wall = await drive(services, jobs, users, count, concurrent)
    stop.set()
    await asyncio.gather(*running)
    for client in clients:
        await client.aclose()
    return latencies, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--count", type=int, default=1, help="images per job (default 1)")
    parser.add_argument("--fsync", default="always", choices=["always", "everysec"], help="Redis appendfsync")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.count} images of 384 px per job, "
          f"appendfsync {args.fsync}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "redis").mkdir()
        with redis_server(root / "redis", args.fsync) as url:
            for concurrent, name in ((False, "one at a time"), (True, f"all at once from {args.users} users")):
                local_dir = root / f"local-{concurrent}"
                local = asyncio.run(measure(args.jobs, args.users, args.count, local_dir, concurrent))
                report(f"local: {name}", *local)
                pool = asyncio.run(measure_pool(url, args.jobs, args.users, args.count, root / f"pool-{concurrent}",
                                                concurrent))
                report(f"redis, 2 bots + 2 workers: {name}", *pool)
                print(f"  pool/local jobs/s: {len(pool[0]) / pool[1] / (len(local[0]) / local[1]):.2f}")


if __name__ == "__main__":
    main()
