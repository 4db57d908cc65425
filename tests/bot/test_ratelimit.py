from __future__ import annotations

import pytest

from bot.config import LimitSettings
from bot.jobs import Refused
from bot.ratelimit import WAITING_RETRY_S, RateLimiter, TokenBucket, duration
from tests.bot.helpers import FakeClock


def test_token_bucket_is_exact_with_an_injected_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket(clock)
    assert [bucket.take("a", 3, 30) for _ in range(3)] == [0, 0, 0]  # a full bucket: 3 at once
    assert bucket.take("a", 3, 30) == pytest.approx(10)  # one token every 10 s
    clock.advance(9.999)
    assert bucket.take("a", 3, 30) == pytest.approx(0.001)
    clock.advance(0.001)
    assert bucket.take("a", 3, 30) == 0
    assert bucket.take("a", 3, 30) == pytest.approx(10)
    clock.advance(1000)  # refills up to capacity, never beyond
    assert [bucket.take("a", 3, 30) for _ in range(4)][:3] == [0, 0, 0]
    assert bucket.wait("a", 3, 30) == pytest.approx(10)
    assert bucket.take("b", 3, 30) == 0  # keys are independent


def test_a_refused_take_costs_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(clock)
    bucket.take("a", 1, 60)
    for _ in range(5):
        clock.advance(10)
        assert bucket.take("a", 1, 60) > 0
    clock.advance(10)
    assert bucket.take("a", 1, 60) == 0


def test_limiter_order_and_sentences() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    limits = LimitSettings(jobs_per_period=2, period_s=3600, max_queued_per_user=2, queue_cap=10)
    limiter.admit("a", limits, admin=False, queued=0, queue_total=0)
    limiter.admit("a", limits, admin=False, queued=1, queue_total=1)
    with pytest.raises(Refused, match="You already have 2 jobs waiting") as info:
        limiter.admit("a", limits, admin=False, queued=2, queue_total=2)
    assert info.value.retry_after == WAITING_RETRY_S  # a limit: HTTP says 429 with Retry-After
    with pytest.raises(Refused, match="You can start 2 jobs every 60 minutes; try again in 30 minutes") as info:
        limiter.admit("a", limits, admin=False, queued=0, queue_total=2)
    assert info.value.retry_after == pytest.approx(1800)
    for _ in range(5):
        limiter.admit("a", limits, admin=True, queued=5, queue_total=2)  # admins are exempt
    with pytest.raises(Refused, match="The queue is full") as info:
        limiter.admit("b", limits, admin=True, queued=0, queue_total=10)
    assert info.value.retry_after == 60


def test_durations_read_naturally() -> None:
    assert [duration(s) for s in (0.2, 1, 1.2, 45, 89, 90, 600, 5400)] == [
        "1 second", "1 second", "2 seconds", "45 seconds", "89 seconds", "2 minutes", "10 minutes", "2 hours"
    ]  # fmt: skip
