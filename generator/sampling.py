"""Classifier-free guidance and sampling from counter-based random numbers.

An image's random numbers depend only on (seed, image index, step), never on its neighbours in the batch:
`image_key` names the image's stream, `uniform` draws step k of it, and `sample` inverts the softmax's
cumulative sum at that one number.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_MIX = 0x45D9F3B
_GOLDEN = 0x9E3779B1


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # A 32-bit integer finaliser in int64 arithmetic: products stay below 2**59, so nothing overflows.
    x = x ^ (x >> 16)
    x = (x * _MIX) & _M32
    x = x ^ (x >> 16)
    x = (x * _MIX) & _M32
    return x ^ (x >> 16)


def _mix32_int(x: int) -> int:
    x ^= x >> 16
    x = (x * _MIX) & _M32
    x ^= x >> 16
    x = (x * _MIX) & _M32
    return x ^ (x >> 16)


def image_key(seed: int, index: int) -> int:
    """The random stream of image `index` of a request with `seed`."""
    seed &= (1 << 64) - 1
    key = _mix32_int((seed & _M32) ^ 0x243F6A88)
    key = _mix32_int(key ^ (seed >> 32) ^ 0x85A308D3)
    return _mix32_int(key ^ (index * _GOLDEN & _M32))


def uniform(keys: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """A number in (0, 1] that is a pure function of (key, step): 24 random bits.  # [B]"""
    bits = _mix32(keys ^ _mix32((steps * _GOLDEN + 0x13198A2E) & _M32))
    return ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, cfg: torch.Tensor) -> torch.Tensor:
    """uncond + cfg * (cond - uncond), per image weight.  # [B, V]"""
    return uncond + cfg[:, None] * (cond - uncond)


def sample(logits: torch.Tensor, temperature: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """softmax(logits / T) sampling by inverting its cumulative sum at u in (0, 1] (one per row, e.g. from
    `uniform`); T == 0 is argmax.  # [B]

    One random number per row instead of one per vocabulary entry (as Gumbel-max needs): a handful of
    kernels over the logits. The first index whose cumulative probability reaches u * total is drawn: as
    0 < u <= 1, that is always an index, and never one of probability 0.
    """
    greedy = temperature <= 0
    inv_t = torch.where(greedy, torch.ones_like(temperature), 1.0 / temperature.clamp(min=1e-6))
    cdf = torch.softmax(logits * inv_t[:, None], dim=-1).cumsum_(dim=-1)
    drawn = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None])[:, 0]  # the total is 1 up to rounding
    return torch.where(greedy, logits.argmax(dim=-1), drawn)
