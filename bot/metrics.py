"""What the service counts for health checks and Prometheus: jobs ended, images made, step time, images/s."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

from bot.jobqueue import Backend
from bot.ratelimit import Clock

RATE_WINDOW_S = 60.0


@dataclass(frozen=True)
class Stats:
    """A snapshot for /healthz and /metrics; counts are since this process started."""

    generator_up: bool
    model: str | None  # None until the model is loaded
    device: str | None
    waiting: int  # jobs queued for the generator
    running: int  # jobs being generated or upscaled
    paused: bool
    ended: dict[str, int] = field(default_factory=dict)  # "done", "failed", "cancelled" -> jobs
    images: int = 0  # images the generator made
    step_seconds: float = 0.0  # total wall time of the sampling steps measured
    steps: int = 0
    images_per_second: float = 0.0  # over the last minute
    generator_restarts: int = 0


class Meter:
    """Counters the service feeds as events go by; cheap enough to call on every progress message."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.ended: Counter[str] = Counter()
        self.images = 0
        self.step_seconds = 0.0
        self.steps = 0
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # job -> (when, step) of its latest progress
        self._recent: deque[tuple[float, int]] = deque()  # (when, images) of recent finished jobs

    def progress(self, job_id: str, step: int) -> None:
        """A job reached `step`; the time since its previous step counts as sampling time."""
        now = self._clock()
        last = self._last.get(job_id)
        if last is not None and step > last[1]:
            self.step_seconds += now - last[0]
            self.steps += step - last[1]
        self._last[job_id] = (now, step)

    def finished(self, job_id: str, state: str, images: int = 0) -> None:
        """A job ended in `state` with `images` newly generated images."""
        self._last.pop(job_id, None)
        self.ended[state] += 1
        if images:
            self.images += images
            self._recent.append((self._clock(), images))

    def images_per_second(self) -> float:
        """Images finished over the last minute, per second."""
        since = self._clock() - RATE_WINDOW_S
        while self._recent and self._recent[0][0] < since:
            self._recent.popleft()
        return sum(n for _, n in self._recent) / RATE_WINDOW_S

    def stats(self, backend: Backend, *, up: bool, waiting: int, running: int, paused: bool) -> Stats:
        """A snapshot of these counters with the queue's state."""
        return Stats(
            generator_up=up and backend.up,
            model=backend.model,
            device=backend.device,
            waiting=waiting,
            running=running,
            paused=paused,
            ended=dict(self.ended),
            images=self.images,
            step_seconds=self.step_seconds,
            steps=self.steps,
            images_per_second=self.images_per_second(),
            generator_restarts=backend.restarts,
        )
