from __future__ import annotations

import pytest

from bot.metrics import Meter
from tests.bot.helpers import FakeClock


def test_step_time_counts_only_forward_steps_and_images_per_second_covers_the_last_minute() -> None:
    clock = FakeClock()
    meter = Meter(clock)
    meter.progress("a", 1)
    clock.advance(0.5)
    meter.progress("a", 3)  # two steps in 0.5 s
    clock.advance(1.0)
    meter.progress("a", 1)  # a re-run after a generator restart starts over: not a step
    clock.advance(0.25)
    meter.progress("a", 2)
    assert (meter.steps, meter.step_seconds) == (3, 0.75)
    meter.finished("a", "done", 4)
    meter.finished("b", "cancelled")
    assert meter.ended == {"done": 1, "cancelled": 1} and meter.images == 4
    assert meter.images_per_second() == pytest.approx(4 / 60)
    clock.advance(61)
    assert meter.images_per_second() == 0 and meter.images == 4
