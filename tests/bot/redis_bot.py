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
from tests.bot.crash_bot import submit_or_recover


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
        await submit_or_recover(app, mode, data_dir, n)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 12))
