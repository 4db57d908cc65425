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
    """One prompt and its settings; `prefix` forces the first tokens of every image (variations)."""

    prompt: str
    num_images: int = 4
    cfg: float = 5.0
    temperature: float = 1.0
    seed: int = 0
    prefix: torch.Tensor | None = None  # [k] or [num_images, k]
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
    """Reported after every step; `tokens` (the rows so far) only every `preview_every` steps."""

    request: Request
    step: int
    total: int
    tokens: torch.Tensor | None = None  # [num_images, step]
