"""What a caller hands the engine and gets back: a request, its result, a report after each step."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

_ids = itertools.count()


class RequestError(ValueError):
    """A request the engine cannot run; the message says what to change."""


@dataclass
class Request:
    """One prompt and its settings.

    `negative` is the prompt guidance steers away from (None: the published unconditional rows). `prefix` forces
    the first tokens of every image (variations); `forced` is a whole source grid whose cells in `keep` are fed
    instead of sampled (image prompts, Vary (Region)).
    """

    prompt: str
    num_images: int = 4
    cfg: float = 5.0
    temperature: float = 1.0
    seed: int = 0
    prefix: torch.Tensor | None = None  # [k] or [num_images, k]
    negative: str | None = None
    forced: torch.Tensor | None = None  # [num_image_tokens] or [num_images, num_image_tokens] codes
    keep: torch.Tensor | None = None  # bool, shaped as `forced`: the cells fed its code (None: all of them)
    id: str = field(default_factory=lambda: f"r{next(_ids)}")


@dataclass
class Result:
    """Tokens of a finished request (or why it has none)."""

    request: Request
    tokens: torch.Tensor | None  # [num_images, num_image_tokens] int64 on CPU
    status: str = "done"  # done | cancelled | failed
    error: str | None = None
    logits: torch.Tensor | None = None  # [num_images, num_image_tokens, codebook] when recorded


@dataclass
class StepReport:
    """Reported after every step; `tokens` (the rows so far) only every `preview_every` steps, and for a request
    starting from a grid (`forced`) at its first step too, with `kept`: a preview shows those cells from the start."""

    request: Request
    step: int
    total: int
    tokens: torch.Tensor | None = None  # [num_images, step]
    kept: torch.Tensor | None = None  # [num_images, num_image_tokens] with tokens: kept cells' codes, -1 elsewhere
