"""What a caller hands the engine and gets back: a request, its result, a report after each step; and a request
checked against an engine (`admit`): its prompt rows and the cells it keeps from a source grid."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
from transformers import JanusProcessor

from generator.prompt import guidance_rows

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


@dataclass
class Admission:
    """A request checked against an engine: its two prompt rows and, when it starts from a grid, the kept cells."""

    cond: list[int]
    uncond: list[int]
    codes: torch.Tensor | None = None  # [1 or num_images, num_image_tokens] on the CPU
    keep: torch.Tensor | None = None  # bool, shaped as codes: the cells fed their code, not a sample

    def plan(self, request: Request, n_tokens: int, *, every_step: bool) -> tuple[int, torch.Tensor | None]:
        """The steps the request runs and its kept cells' codes for previews ([num_images, T], -1 elsewhere).

        After its last sampled cell the rest are kept cells, which need no forward, unless `every_step` (recorded
        logits need every step). A variation's prefix has no preview of its kept cells: it previews top-down.
        """
        if self.keep is None or self.codes is None:
            return n_tokens, None
        keep = self.keep.expand(request.num_images, -1)
        kept = torch.where(keep, self.codes, -1) if request.forced is not None else None
        sampled = (~keep).any(dim=0).nonzero()
        if every_step:
            return n_tokens, kept
        return (int(sampled[-1]) + 1 if len(sampled) else 1), kept


def admit(request: Request, processor: JanusProcessor, *, max_images: int, max_prompt_tokens: int, n_tokens: int,
          codebook: int) -> Admission:
    """Check a request against an engine of `max_images` image slots; RequestError says what to change."""
    if not request.prompt.strip():
        raise RequestError("The prompt is empty; describe the picture you want.")
    if not 1 <= request.num_images <= max_images:
        raise RequestError(f"Ask for between 1 and {max_images} images, not {request.num_images}.")
    if not math.isfinite(request.cfg) or request.cfg < 0:
        raise RequestError(f"The guidance weight must be a number of at least 0, not {request.cfg}.")
    if not math.isfinite(request.temperature) or request.temperature < 0:
        raise RequestError(f"The temperature must be a number of at least 0, not {request.temperature}.")
    if request.negative is not None and not isinstance(request.negative, str):
        raise RequestError("The negative prompt must be text.")
    cond, uncond = guidance_rows(processor, request.prompt, request.negative)
    for name, ids in (("prompt", cond), ("negative prompt", uncond)):
        if len(ids) > max_prompt_tokens:
            raise RequestError(f"The {name} is too long ({len(ids)} tokens, at most {max_prompt_tokens}); shorten it.")
    return Admission(cond, uncond, *_kept_cells(request, n_tokens, codebook))


def _kept_cells(request: Request, total: int, codebook: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The source codes and kept cells of a request, [1 or num_images, T] each, or (None, None)."""
    n = request.num_images

    def grid_shaped(x: torch.Tensor, length: int) -> bool:
        return x.dim() in (1, 2) and x.shape[-1] == length and (x.dim() == 1 or x.shape[0] == n)

    prefix, forced, keep = request.prefix, request.forced, request.keep
    if prefix is not None and (forced is not None or keep is not None):
        raise RequestError("Give a token prefix or a grid to start from, not both.")
    if prefix is not None:
        if prefix.dim() not in (1, 2) or not grid_shaped(prefix, prefix.shape[-1]) or prefix.shape[-1] > total:
            raise RequestError(f"A token prefix must be [k] or [num_images, k] with k <= {total}.")
        codes = torch.zeros(*prefix.shape[:-1], total, dtype=torch.long)
        codes[..., : prefix.shape[-1]] = prefix
        keep = torch.arange(total) < prefix.shape[-1]
    elif forced is not None:
        if not grid_shaped(forced, total):
            raise RequestError(f"A grid to start from must be [{total}] or [num_images, {total}] codes.")
        codes = forced
        if keep is None:
            keep = torch.ones(total, dtype=torch.bool)
        elif not grid_shaped(keep, total) or keep.dtype != torch.bool:
            raise RequestError(f"The cells to keep must be a [{total}] or [num_images, {total}] boolean mask.")
    elif keep is not None:
        raise RequestError("Cells to keep need a grid to start from.")
    else:
        return None, None
    given = prefix if prefix is not None else forced
    in_range = not codes.numel() or (int(codes.min()) >= 0 and int(codes.max()) < codebook)
    if given.is_floating_point() or given.dtype == torch.bool or not in_range:
        raise RequestError(f"Token ids must be whole numbers from 0 to {codebook - 1}.")
    return codes.cpu().long().reshape(-1, total), keep.cpu().reshape(-1, total)
