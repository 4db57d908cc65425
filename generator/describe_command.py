"""`janus-bot describe`: pictures in, prompts out, through the model's own understanding path (`generator.describe`).

Every picture is read and checked before the model loads: a missing file, one that is not a picture, too large or
of too many pixels is one sentence and exit code 2. Picture i uses seed + i, as prompt i of `janus-bot imagine`
does. With --json each picture is one line of JSON holding the token ids each prompt was generated as.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time

from generator.cli import UsageError, command
from generator.imagine import read_picture
from generator.protocol import DESCRIBE_MAX_TOKENS, check_describe

CALL_ROWS = 16  # rows (pictures x prompts; one a picture when greedy) of one generate call


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="picture files: PNG, JPEG, WebP or GIF")
    parser.add_argument("--model", help="hub id or checkpoint directory (default: the built-in model)")
    parser.add_argument("-n", "--count", type=int, default=4, help="prompts per picture, 1-16 (default 4)")
    parser.add_argument("--temperature", type=float, default=0.7,
                        help="0-2; 0 is greedy, the same prompt each time (default 0.7)")
    parser.add_argument("--seed", type=int, help="random seed (default: random); picture i uses seed+i")
    parser.add_argument("--instruction", help="what the model is asked about each picture (default: to write a "
                                              "prompt for an image generator that would produce it)")
    parser.add_argument("--max-tokens", type=int, default=64,
                        help=f"longest prompt in tokens, 1-{DESCRIBE_MAX_TOKENS} (default 64)")
    parser.add_argument("--json", action="store_true",
                        help='one line per picture: {"image": path, "prompts": [...], "tokens": [[ids], ...]}')
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    parser.add_argument("--dtype", help="auto, bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)")


@command
def run(args: argparse.Namespace) -> int:
    check_describe(args.count, args.temperature, args.seed, args.instruction, args.max_tokens)
    pictures = [read_picture(name, repr(name)) for name in args.images]

    from generator.checkpoint import first_line, load_from_args
    from generator.describe import DEFAULT_INSTRUCTION, describe

    checkpoint = load_from_args(args)
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    per_call = max(1, CALL_ROWS // (args.count if args.temperature > 0 else 1))
    started = time.perf_counter()
    for first in range(0, len(pictures), per_call):
        chunk = range(first, min(first + per_call, len(pictures)))
        try:
            results = describe(checkpoint, [pictures[i] for i in chunk], count=args.count,
                               temperature=args.temperature, seed=[seed + i for i in chunk],
                               instruction=args.instruction or DEFAULT_INSTRUCTION, max_new_tokens=args.max_tokens)
        except ValueError as err:  # a chat template with no place for a picture
            raise UsageError(first_line(err)) from None
        for i, result in zip(chunk, results):
            name = args.images[i]
            if args.json:
                print(json.dumps({"image": name, "prompts": result.prompts, "tokens": result.tokens}), flush=True)
                continue
            print(("\n" if i else "") + name)
            for n, prompt in enumerate(result.prompts, 1):
                print(f"  {n}. {prompt}")
            sys.stdout.flush()
    elapsed = time.perf_counter() - started
    print(f"{len(pictures) * args.count} prompts for {len(pictures)} picture(s) in {elapsed:.1f}s, seed {seed}, "
          f"model {checkpoint.name}", file=sys.stderr)
    return 0
