"""`janus-bot`: one command line for the generator's tools and the bot; imports each side only when used."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="janus-bot", description="Janus / Janus-Pro image generation bot.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    imagine = commands.add_parser("imagine", help="generate images from prompts, all in one batch")
    imagine.add_argument("prompts", nargs="+", metavar="PROMPT", help="one or more prompts, generated together")
    imagine.add_argument("--model", help="hub id or checkpoint directory (default: the built-in model)")
    imagine.add_argument("-n", "--count", type=int, default=4, help="images per prompt, 1-16 (default 4)")
    imagine.add_argument("--cfg", type=float, default=5.0, help="guidance weight, 1-10 (default 5)")
    imagine.add_argument("--temperature", type=float, default=1.0, help="0-1.5; 0 is greedy (default 1)")
    imagine.add_argument("--seed", type=int, help="random seed (default: random); prompt i uses seed+i")
    imagine.add_argument("-o", "--output", help="grid of all images (.png, .jpg or .webp)")
    imagine.add_argument("--out-dir", help="write each image as <prompt>-<image>.png")
    imagine.add_argument("--upscale", type=int, metavar="PX", help="Lanczos-upscale each image to PX pixels")
    imagine.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    imagine.add_argument("--dtype", help="auto, bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)")

    make = commands.add_parser("make-model", help="save a random-weight checkpoint of a preset architecture")
    make.add_argument("out_dir", metavar="OUT_DIR")
    make.add_argument("--preset", default="tiny", help="tiny, small, janus-pro-1b or janus-pro-7b (default tiny)")
    make.add_argument("--seed", type=int, default=0)

    bench = commands.add_parser("bench", help="measure the engine against the reference loop and transformers")
    bench.add_argument("--preset", default="small", help="tiny, small, janus-pro-1b or janus-pro-7b (default small)")
    bench.add_argument("--tokens", type=int, help="tokens per image, a square (default: the preset's; small: 144)")
    bench.add_argument("--requests", type=int, default=8, help="number of requests (default 8)")
    bench.add_argument("--images", type=int, default=4, help="images per request (default 4)")
    bench.add_argument("--arrival", choices=["together", "staggered"], default="together",
                       help="all at once, or one every half of a lone request's time")
    bench.add_argument("--max-batch-images", type=int, help="engine slots (default: the whole workload)")
    bench.add_argument("--repeat", type=int,
                       help="runs of each method, interleaved; the median is printed (default 3 on CPU, 1 on CUDA)")
    bench.add_argument("--workload", nargs="+", metavar="RxI",
                       help="several workloads on one model, e.g. 1x1 1x4 4x4 (requests x images each)")
    bench.add_argument("--graphs", action=argparse.BooleanOptionalAction, default=None,
                       help="run the engine's decode step as captured CUDA graphs (default: on CUDA)")
    bench.add_argument("--compile", action="store_true",
                       help="compile the engine's decode step with torch.compile (inductor) first")
    bench.add_argument("--skip", nargs="*", default=[], choices=["reference", "transformers"],
                       help="baselines to leave out")
    bench.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    bench.add_argument("--dtype", help="auto, bf16 or fp32 (default: bf16 on CUDA, fp32 on CPU)")

    run = commands.add_parser("run", help="run the bot until SIGTERM or Ctrl-C")
    run.add_argument("-c", "--config", help="TOML settings file (default: config.toml if present, else defaults)")
    run.add_argument("--model", help="hub id or checkpoint directory (overrides [model] name)")
    run.add_argument("--data-dir", help="database and images directory (overrides [bot] data_dir)")
    run.add_argument("--web-port", type=int, metavar="N",
                     help="serve the web playground and API on port N (0: any free port), chat platforms or not")
    run.add_argument("--redis", metavar="URL",
                     help='share the job queue in Redis with other bots and GPU workers ([queue] backend = "redis")')
    run.add_argument("--instance", help="this bot's name in the Redis pool, one per platform or shard")

    # Parsed by bot.worker itself (see main); listed here for `janus-bot -h`.
    commands.add_parser("worker", add_help=False,
                        help="run a GPU worker of the Redis pool: janus-bot worker --redis URL [--model ...]")
    pool = commands.add_parser("pool", help="show the Redis pool: waiting jobs and each worker's health")
    pool.add_argument("--redis", required=True, metavar="URL", help="the pool's Redis, redis://host:6379/0")
    pool.add_argument("--prefix", default="janus", help="Redis key prefix shared by the pool (default janus)")

    train = commands.add_parser("train-demo", help="train the built-in demo model on synthetic scenes (CPU, minutes)")
    train.add_argument("out_dir", metavar="OUT_DIR")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=2, help="CPU threads for torch (default 2)")

    evaluate = commands.add_parser("eval-demo", help="score prompt adherence on held-out scenes, cfg 1 vs --cfg")
    evaluate.add_argument("--model", help="checkpoint directory (default: the built-in demo model)")
    evaluate.add_argument("--cfg", type=float, help="guidance weight compared with cfg 1 (default 5)")
    evaluate.add_argument("--n", type=int, help="held-out prompts (default 256)")
    evaluate.add_argument("--images", type=int, default=4, help="images per prompt (default 4)")
    evaluate.add_argument("--seed", type=int, default=0, help="picks the prompts and the sampling noise")
    return parser


def _run_bot(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    from pathlib import Path

    from bot import app
    from bot.adapters import PlatformUnreachable
    from bot.config import ConfigError, load_settings
    from bot.generator_client import GeneratorStartError

    path = Path(args.config) if args.config else Path("config.toml")
    try:
        settings = load_settings(path if args.config or path.exists() else None)
        if args.web_port is not None and not 0 <= args.web_port <= 65535:
            raise ConfigError(f"--web-port: {args.web_port} is not a port; give 0 to 65535")
    except ConfigError as error:
        print(f"janus-bot: {error}", file=sys.stderr)
        return 2
    # Flags override the file.
    if args.model is not None:
        settings = settings.model_copy(update={"model": settings.model.model_copy(update={"name": args.model})})
    if args.data_dir is not None:
        bot = settings.bot.model_copy(update={"data_dir": Path(args.data_dir)})
        settings = settings.model_copy(update={"bot": bot})
    if args.web_port is not None:
        web = settings.web.model_copy(update={"enabled": True, "port": args.web_port})
        settings = settings.model_copy(update={"web": web})
    if args.redis is not None or args.instance is not None:
        queue = settings.queue.model_copy(update={"backend": "redis"} if args.redis is None else
                                          {"backend": "redis", "redis_url": args.redis})
        if args.instance is not None:
            queue = queue.model_copy(update={"instance": args.instance})
        settings = settings.model_copy(update={"queue": queue})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(app.run(settings))
    except ConfigError as error:
        print(f"janus-bot: {error}", file=sys.stderr)
        return 2
    except (GeneratorStartError, PlatformUnreachable) as error:
        print(f"janus-bot: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before start-up finished (after it, Ctrl-C is a graceful shutdown)
        print("janus-bot: interrupted while starting", file=sys.stderr)
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["worker"]:  # its options live with it, so that the bot's side imports nothing of it
        from bot import worker

        return worker.main(argv[1:], prog="janus-bot worker")
    args = _parser().parse_args(argv)
    if args.command in ("imagine", "make-model", "bench"):
        from generator import cli

        return cli.run(args)
    if args.command in ("train-demo", "eval-demo"):
        from generator.demo import cli as demo

        return demo.run(args)
    if args.command == "run":
        return _run_bot(args)
    if args.command == "pool":
        import asyncio

        from bot.redis_queue import REDIS_DOWN, describe_pool

        try:
            print(asyncio.run(describe_pool(args.redis, args.prefix)))
        except REDIS_DOWN as error:
            print(f"janus-bot: Redis cannot be reached ({error})", file=sys.stderr)
            return 1
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
