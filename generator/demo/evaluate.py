"""Prompt adherence on held-out scenes: generate several pictures per prompt, check each, at two cfg weights.

An image counts towards `overall` only if every check on it passes (background, count, and each described
shape's colour, kind and position), as GenEval counts an image only when all of its prompt is right.
The gap between the two weights comes with a 95% interval over prompts (each prompt's images are drawn with
the same random numbers at both weights, so the comparison is paired). Two more figures say which half of the
model loses the points: how often the language model's code grid is right (size aside), and how often the VQ
decoder draws a correct picture from the true code grid.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass

import torch
from PIL import Image

from generator.checkpoint import Checkpoint, CheckpointError, load_checkpoint, resolve_model
from generator.cli import UsageError, command, quiet_transformers
from generator.codec import decode_tokens
from generator.demo import checker, scenes
from generator.demo.train import codes_follow, scene_codes
from generator.engine import Request, generate
from generator.protocol import DEFAULTS

# At 32 prompts the demo model trained with smoothing 0.1 read a guidance gain of +0.07; 256 put it at -0.01.
PROMPTS = 256


@dataclass
class Scores:
    """Per-attribute accuracy and the share of images with everything right, at one cfg weight."""

    cfg: float
    attributes: dict[str, float]
    images: int
    codes: float  # share of code grids that draw the prompt, size aside
    per_prompt: list[float]  # share of each prompt's images with everything right

    @property
    def overall(self) -> float:
        """The share of all images with everything right (each prompt has as many)."""
        return sum(self.per_prompt) / len(self.per_prompt)


@dataclass
class Evaluation:
    """Scores at cfg 1 and at the compared weight, and the decoder alone on the same scenes' true grids."""

    scores: list[Scores]
    decoder: float

    def gap(self) -> tuple[float, float]:
        """The compared weight's overall score minus cfg 1's, and the half-width of its 95% interval."""
        low, high = self.scores[0], self.scores[-1]
        diffs = [b - a for a, b in zip(low.per_prompt, high.per_prompt)]
        spread = statistics.stdev(diffs) if len(diffs) > 1 else math.inf
        return high.overall - low.overall, 1.96 * spread / math.sqrt(len(diffs))


def tokens_for(checkpoint: Checkpoint, prompts: list[str], *, num_images: int, cfg: float,
               temperature: float = 1.0, seed: int = 0) -> list[torch.Tensor]:
    """`num_images` code grids for each prompt, all in one batch; prompt i uses seed + i.  # [n, g*g] each"""
    requests = [Request(p, num_images=num_images, cfg=cfg, temperature=temperature, seed=seed + i)
                for i, p in enumerate(prompts)]
    return [r.tokens for r in generate(checkpoint, requests)]


def images_for(checkpoint: Checkpoint, prompts: list[str], *, num_images: int, cfg: float,
               temperature: float = 1.0, seed: int = 0) -> list[list[Image.Image]]:
    """`num_images` pictures for each prompt, all in one batch; prompt i uses seed + i."""
    grids = tokens_for(checkpoint, prompts, num_images=num_images, cfg=cfg, temperature=temperature, seed=seed)
    return [decode_tokens(checkpoint, tokens, chunk=64) for tokens in grids]


def decoder_alone(checkpoint: Checkpoint, cases: list[tuple[scenes.Scene, str]]) -> float:
    """Share of the scenes' true code grids that the VQ decoder draws with every check passing."""
    pictures = decode_tokens(checkpoint, torch.tensor([scene_codes(scene) for scene, _ in cases]), chunk=64)
    return sum(all(all(oks) for oks in checker.score(scene, picture).values())
               for (scene, _), picture in zip(cases, pictures)) / len(cases)


def score_grids(checkpoint: Checkpoint, cases: list[tuple[scenes.Scene, str]], grids: list[torch.Tensor],
                cfg: float) -> Scores:
    """Checker results over the decoded pictures of all prompts, and how many of their code grids are right."""
    checks: dict[str, list[bool]] = {name: [] for name in checker.ATTRIBUTES}
    per_prompt = []
    right = [codes_follow(scene, row.tolist()) for (scene, _), tokens in zip(cases, grids) for row in tokens]
    for (scene, _), tokens in zip(cases, grids):
        perfect = 0
        pictures = decode_tokens(checkpoint, tokens, chunk=64)
        for picture in pictures:
            result = checker.score(scene, picture)
            for name, oks in result.items():
                checks[name] += oks
            perfect += all(all(oks) for oks in result.values())
        per_prompt.append(perfect / len(pictures))
    attributes = {name: sum(oks) / len(oks) for name, oks in checks.items() if oks}
    return Scores(cfg, attributes, len(right), sum(right) / len(right), per_prompt)


def evaluate(checkpoint: Checkpoint, *, prompts: int = PROMPTS, num_images: int = 4, cfg: float | None = None,
             seed: int = 0) -> Evaluation:
    """Scores at cfg 1 and at `cfg` (default: the bot's default weight) on held-out prompts."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    weight = float(DEFAULTS["cfg"] if cfg is None else cfg)
    cases = scenes.held_out_scenes(prompts, seed)
    captions = [text for _, text in cases]
    scores = [score_grids(checkpoint, cases, tokens_for(checkpoint, captions, num_images=num_images, cfg=w, seed=seed),
                          w) for w in (1.0, weight)]
    return Evaluation(scores, decoder_alone(checkpoint, cases))


def table(evaluation: Evaluation) -> list[str]:
    """Lines of a side-by-side table, ending with the `overall:` summary line."""
    low, high = evaluation.scores[0], evaluation.scores[-1]
    lines = [f"{'attribute':<12}{'cfg ' + format(low.cfg, 'g'):>10}{'cfg ' + format(high.cfg, 'g'):>10}"]
    for name in checker.ATTRIBUTES:
        lines.append(f"{name:<12}{low.attributes[name]:>10.2f}{high.attributes[name]:>10.2f}")
    lines.append(f"{'all correct':<12}{low.overall:>10.2f}{high.overall:>10.2f}   ({high.images} images each)")
    lines.append(f"{'codes right':<12}{low.codes:>10.2f}{high.codes:>10.2f}   (the language model's part, size aside)")
    gap, half = evaluation.gap()
    lines.append(f"guidance gain: {gap:+.2f} all correct, 95% interval {gap - half:+.2f} to {gap + half:+.2f} "
                 f"(over {len(low.per_prompt)} prompts)")
    lines.append(f"decoder alone: {evaluation.decoder:.2f} of the true code grids drawn with every check passing")
    lines.append(f"overall: {high.overall:.2f} at cfg {high.cfg:g}, {low.overall:.2f} at cfg {low.cfg:g}")
    return lines


# -- `janus-bot eval-demo` ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="checkpoint directory (default: the built-in demo model)")
    parser.add_argument("--cfg", type=float, help="guidance weight compared with cfg 1 (default 5)")
    parser.add_argument("--n", type=int, help="held-out prompts (default 256)")
    parser.add_argument("--images", type=int, default=4, help="images per prompt (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="picks the prompts and the sampling noise")


@command
def run(args: argparse.Namespace) -> int:
    if args.n is not None and args.n < 1:
        raise UsageError(f"--n must be at least 1; you gave {args.n}.")
    if args.cfg is not None and not 0 <= args.cfg <= 10:
        raise UsageError(f"--cfg must be between 0 and 10; you gave {args.cfg:g}.")
    quiet_transformers()
    try:
        checkpoint = load_checkpoint(resolve_model(args.model), device="cpu")
    except CheckpointError as err:
        raise UsageError(str(err)) from None
    started = time.perf_counter()
    prompts = args.n or PROMPTS
    results = evaluate(checkpoint, prompts=prompts, num_images=args.images, cfg=args.cfg, seed=args.seed)
    print(f"{prompts} held-out prompts x {args.images} images, model {checkpoint.name}, "
          f"{time.perf_counter() - started:.1f}s")
    print("\n".join(table(results)))
    return 0
