"""`janus-bot pool`: the Redis pool at a glance, its waiting jobs and each worker's health."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.redis_queue import REDIS_DOWN, REFUSED_LOGIN, describe_pool, login_refused
from bot.worker import redis_url_from_env


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", metavar="URL", default=redis_url_from_env(),
                        help="the pool's Redis, redis://host:6379/0 (default: JANUS_BOT_REDIS_URL)")
    parser.add_argument("--prefix", default="janus", help="Redis key prefix shared by the pool (default janus)")


def run(args: argparse.Namespace) -> int:
    """Print the pool; 1 when Redis cannot be reached, 2 when it refuses the login or none is given."""
    if not args.redis:
        print("janus-bot: give the pool's Redis: --redis URL, or JANUS_BOT_REDIS_URL in the environment",
              file=sys.stderr)
        return 2
    try:
        print(asyncio.run(describe_pool(args.redis, args.prefix)))
    except REFUSED_LOGIN as error:
        print(f"janus-bot: {login_refused(error)}", file=sys.stderr)
        return 2
    except REDIS_DOWN as error:
        print(f"janus-bot: Redis cannot be reached ({error})", file=sys.stderr)
        return 1
    return 0
