"""A bot process on the Redis pool for the crash test: `python -m tests.bot.redis_bot submit|recover DATA URL [N]`.

submit: start, accept N one-image jobs from three users, write their ids to DATA/accepted, then wait to be killed.
recover: start (re-sending what the killed bot left), wait until no job is waiting or running, exit.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bot.app import App
from bot.config import Settings
from bot.jobs import Requester, Status
from bot.store import Store


async def main(mode: str, data_dir: Path, url: str, n: int) -> None:
    settings = Settings.model_validate(
        {
            "bot": {"data_dir": str(data_dir), "shutdown_grace_s": 0},
            "limits": {"max_queued_per_user": n, "max_running_per_user": n},
            "generator": {"max_batch_images": 2},
            "queue": {"backend": "redis", "redis_url": url, "instance": "crash", "poll_s": 0.1},
        }
    )
    async with App(settings) as app:
        if mode == "submit":
            ids = []
            for i in range(n):
                handle = await app.service.submit(Requester("test", "s", "c", f"u{i % 3}"), f"crash {i}", count=1)
                ids.append(handle.job.id)
            (data_dir / "accepted").write_text("\n".join(ids) + "\n")
            print("accepted", flush=True)
            await asyncio.sleep(3600)
        else:
            async with await Store.open(data_dir) as store:
                while await store.jobs(Status.QUEUED, Status.RUNNING):
                    await asyncio.sleep(0.1)
            print("recovered", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 12))
