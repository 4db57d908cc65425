"""Who may queue a job now: per-user token buckets and queue caps."""

from __future__ import annotations

import math
from collections.abc import Callable

from bot.config import LimitSettings
from bot.jobs import Refused

Clock = Callable[[], float]  # seconds, monotonic
_EPSILON = 1e-9
QUEUE_FULL_RETRY_S = 60.0
WAITING_RETRY_S = 15.0  # a hint only: one of the user's waiting jobs starting is what frees a place


def duration(seconds: float) -> str:
    """A wait as words: "1 second", "45 seconds", "3 minutes", "2 hours"."""
    for unit, size in (("hour", 3600.0), ("minute", 60.0), ("second", 1.0)):
        if seconds >= 1.5 * size or unit == "second":
            n = max(1, math.ceil(seconds / size - _EPSILON))
            return f"{n} {unit}" + ("" if n == 1 else "s")
    raise AssertionError(seconds)


class TokenBucket:
    """Per-key buckets of `capacity` tokens, each refilled continuously over `period` seconds."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def _tokens(self, key: str, capacity: int, period: float) -> float:
        now = self._clock()
        tokens, when = self._buckets.get(key, (float(capacity), now))
        return min(float(capacity), tokens + (now - when) * capacity / period)

    def wait(self, key: str, capacity: int, period: float) -> float:
        """Seconds until `key` has a token (0 when it has one now)."""
        tokens = self._tokens(key, capacity, period)
        return 0.0 if tokens >= 1 - _EPSILON else (1 - tokens) * period / capacity

    def take(self, key: str, capacity: int, period: float) -> float:
        """Take a token and return 0, or take nothing and return the seconds until one is there."""
        wait = self.wait(key, capacity, period)
        if wait == 0:
            self._buckets[key] = (max(0.0, self._tokens(key, capacity, period) - 1), self._clock())
        return wait


class RateLimiter:
    """Refuses a job the user may not queue now, saying why and when to try again; admins are exempt."""

    def __init__(self, clock: Clock) -> None:
        self.buckets = TokenBucket(clock)

    def admit(self, key: str, limits: LimitSettings, *, admin: bool, queued: int, queue_total: int,
              server_total: int = 0) -> None:
        """Take one job from `key`'s bucket, or raise Refused; `queued` counts that user's waiting jobs,
        `server_total` their server's."""
        if not admin and queued >= limits.max_queued_per_user:
            raise too_many_waiting(queued)
        if queue_total >= limits.queue_cap:
            raise queue_full(queue_total)
        if server_total >= server_cap(limits):
            raise server_full(server_total)
        if admin:
            return
        wait = self.buckets.take(key, limits.jobs_per_period, limits.period_s)
        if wait:
            raise rate_limited(limits, wait)


# The refusals of the limits, shared by the local limiter and the Redis queue's atomic admission.


def too_many_waiting(queued: int) -> Refused:
    jobs = "job" if queued == 1 else "jobs"
    return Refused(f"You already have {queued} {jobs} waiting; try again when one of them starts.", WAITING_RETRY_S)


def queue_full(total: int) -> Refused:
    return Refused(f"The queue is full ({total} jobs waiting); try again in about a minute.", QUEUE_FULL_RETRY_S)


def server_full(waiting: int) -> Refused:
    return Refused(f"This server already has {waiting} jobs waiting, its share of the queue; try again in about a "
                   f"minute.", QUEUE_FULL_RETRY_S)


def server_cap(limits: LimitSettings) -> int:
    """The most jobs one server may have waiting."""
    return max(1, math.floor(limits.server_share * limits.queue_cap))


def rate_limited(limits: LimitSettings, wait: float, what: str = "jobs") -> Refused:
    verb = "start" if what == "jobs" else "make"
    return Refused(
        f"You can {verb} {limits.jobs_per_period} {what} every {duration(limits.period_s)}; "
        f"try again in {duration(wait)}.",
        wait,
    )
