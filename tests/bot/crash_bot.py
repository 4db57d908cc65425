"""A bot process for the crash tests: `python -m tests.bot.crash_bot submit|term|recover DATA_DIR MODEL_DIR [N]`.

submit: start, accept N one-image jobs, write their ids to DATA_DIR/accepted, then wait to be killed.
term: the same, then shut down as `janus-bot run` does on SIGTERM or Ctrl-C (a grace period of 0.3 s).
recover: start (re-queueing what the stopped bot left), wait until no job is waiting or running, exit.
Each appends every job id it sends to the generator to DATA_DIR/submitted-<mode>, and "id seed" lines
to DATA_DIR/seeds-<mode>.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from bot.app import App, until_signalled
from bot.config import Settings
from bot.generator_client import GeneratorProcess
from bot.jobs import Requester, Status
from bot.local_queue import LocalQueue
from bot.store import Store
from generator import protocol as wire


class Recording:
    """A generator that notes, durably, every job id it is asked to run."""

    def __init__(self, inner: GeneratorProcess, log: Path) -> None:
        self.inner = inner
        self.log = log

    async def start(self) -> wire.Ready:
        ready = await self.inner.start()
        (self.log.parent / "generator.pid").write_text(str(self.inner.pid))
        return ready

    async def submit(self, msg: wire.Generate) -> None:
        for path, line in ((self.log, msg.job_id), (self.log.with_name(self.log.name.replace("submitted", "seeds")),
                                                     f"{msg.job_id} {msg.seed}")):
            with path.open("a") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        await self.inner.submit(msg)

    async def cancel(self, job_id: str) -> None:
        await self.inner.cancel(job_id)

    async def close(self) -> None:
        await self.inner.close()

    def events(self) -> AsyncIterator[wire.Message]:
        return self.inner.events()


async def submit_or_recover(app: App, mode: str, data_dir: Path, n: int) -> None:
    """submit: accept n one-image jobs from three users, record their ids, wait to be killed.
    recover: wait until the restarted bot has no job waiting or running."""
    if mode in ("submit", "term"):
        ids = []
        for i in range(n):
            handle = await app.service.submit(Requester("test", "s", "c", f"u{i % 3}"), f"crash {i}", count=1)
            ids.append(handle.job.id)
        (data_dir / "accepted").write_text("\n".join(ids) + "\n")
        print("accepted", flush=True)
        if mode == "term":
            await until_signalled()  # then leave the App block: the shutdown `janus-bot run` does
        else:
            await asyncio.sleep(3600)
    else:
        async with await Store.open(data_dir) as store:
            while await store.jobs(Status.QUEUED, Status.RUNNING):
                await asyncio.sleep(0.1)
        print("recovered", flush=True)


async def main(mode: str, data_dir: Path, model_dir: str, n: int) -> None:
    settings = Settings.model_validate(
        {
            "bot": {"data_dir": str(data_dir), "shutdown_grace_s": 0.3 if mode == "term" else 0},
            "limits": {"max_queued_per_user": n, "max_running_per_user": n},
        }
    )
    process = GeneratorProcess(
        model_dir, device="cpu", max_batch_images=2, preview_every=0, extra_args=["--step-delay", "0.02"]
    )
    async with App(settings, LocalQueue(Recording(process, data_dir / f"submitted-{mode}"))) as app:
        await submit_or_recover(app, mode, data_dir, n)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 6))
