"""The vocabulary every adapter shares: who asked, what they asked for, the job and its events."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum

from generator.protocol import OptionError, check_negative, check_options, check_prompt


class Refused(Exception):
    """A request the bot will not take; the message is a sentence for the user, saying when to retry."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Invalid(Refused):
    """A request wrong as given (too long, out of range, not a picture): the message says what to change."""


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """Whether the job can no longer change."""
        return self in (Status.DONE, Status.FAILED, Status.CANCELLED)


class Kind(StrEnum):
    IMAGINE = "imagine"
    REROLL = "reroll"
    UPSCALE = "upscale"
    VARIATION = "variation"
    REGION = "region"  # Vary (Region): a rectangle of one image made again, the rest kept
    DESCRIBE = "describe"  # a picture read back into prompts


Region = tuple[float, float, float, float]  # x0, y0, x1, y1 in fractions of the width and height
BOTTOM_HALF: Region = (0.0, 0.5, 1.0, 1.0)
# The regions chat menus offer, by name.
REGIONS: dict[str, Region] = {
    "top half": (0.0, 0.0, 1.0, 0.5), "bottom half": BOTTOM_HALF, "left half": (0.0, 0.0, 0.5, 1.0),
    "right half": (0.5, 0.0, 1.0, 1.0), "centre": (0.25, 0.25, 0.75, 0.75),
    "top left": (0.0, 0.0, 0.5, 0.5), "top right": (0.5, 0.0, 1.0, 0.5),
    "bottom left": (0.0, 0.5, 0.5, 1.0), "bottom right": (0.5, 0.5, 1.0, 1.0),
}  # fmt: skip


def region_name(region: Region | None) -> str | None:
    """The name chat menus give a region, if it is one of theirs."""
    return next((name for name, known in REGIONS.items() if known == region), None)


def checked_region(values: object) -> Region:
    """Four fractions x0, y0, x1, y1 of a picture's width and height, or Refused with a sentence."""
    try:
        x0, y0, x1, y1 = (float(v) for v in values)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise Invalid("A region is four numbers x0,y0,x1,y1 from 0 to 1, such as 0,0.5,1,1 for the bottom "
                      "half.") from None
    if not all(0 <= v <= 1 for v in (x0, y0, x1, y1)) or not (x0 < x1 and y0 < y1):
        raise Invalid(f"The region {x0:g},{y0:g},{x1:g},{y1:g} is not inside the picture or is empty; give "
                      f"x0,y0,x1,y1 from 0 to 1 with x0 < x1 and y0 < y1.")
    return (x0, y0, x1, y1)


class Strength(StrEnum):
    SUBTLE = "subtle"
    STRONG = "strong"

    @property
    def kept(self) -> float:
        """The share of the token grid's rows a variation keeps from its source image."""
        return 0.75 if self is Strength.SUBTLE else 0.25


@dataclass(frozen=True)
class Requester:
    """Who asked and where: a user in a channel of a server (Discord guild or Slack workspace)."""

    platform: str
    server: str
    channel: str
    user: str  # the platform's id of the user: what limits, bans, ownership and admin rights go by
    is_admin: bool = False  # an admin of this server, as the platform says
    name: str = ""  # how to show the user, when the platform gives a name beside the id

    @property
    def shown(self) -> str:
        """The user's name when known, else the id."""
        return self.name or self.user

    @property
    def user_key(self) -> str:
        """The user across servers of one platform."""
        return f"{self.platform}:{self.user}"


@dataclass(frozen=True)
class Options:
    count: int
    cfg: float
    temperature: float
    seed: int | None = None
    negative: str | None = None  # what guidance steers away from (Midjourney's --no)

    @classmethod
    def checked(cls, count: int, cfg: float, temperature: float, seed: int | None, negative: str | None = None
                ) -> Options:
        """Options in range, or Refused with a sentence saying which one to change."""
        try:
            check_options(count, cfg, temperature, seed)
            negative = check_negative(negative)
        except OptionError as error:
            raise Refused(str(error)) from None
        return cls(count, float(cfg), float(temperature), seed, negative)


def checked_prompt(prompt: str) -> str:
    """The stripped prompt, or Refused with a sentence saying what is wrong with it."""
    try:
        return check_prompt(prompt)
    except OptionError as error:
        raise Refused(str(error)) from None


JOB_ID = re.compile(r"[0-9a-f]{16}")


def new_job_id() -> str:
    """A short id that is safe in button custom ids and file names."""
    return secrets.token_hex(8)


def is_job_id(text: str) -> bool:
    """Whether `text` has the form new_job_id gives, and so is safe in a file name or a path."""
    return JOB_ID.fullmatch(text) is not None


@dataclass(frozen=True)
class Job:
    """One request and where it stands; `seed` is always set (picked at submit when the user gave none)."""

    id: str
    requester: Requester
    prompt: str
    options: Options
    seed: int
    created_at: float
    kind: Kind = Kind.IMAGINE
    parent_id: str | None = None
    parent_index: int | None = None  # the source image of an upscale or variation
    strength: Strength | None = None  # variations only
    status: Status = Status.QUEUED
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    grid_path: str | None = None  # relative to the data directory
    delivered: bool = False
    removed_at: float | None = None  # when its pictures were deleted (retention, or deleted by a person)
    deleted_by: str | None = None  # "platform:user" of who deleted it; the row stays as a tombstone
    model: str | None = None  # the checkpoint that made it
    region: Region | None = None  # the cells made again: Vary (Region), or an image prompt's
    source: str | None = None  # an image prompt's (or a describe's) picture, relative to the data directory
    prompts: tuple[str, ...] | None = None  # a finished describe job's answers

    @property
    def deleted(self) -> bool:
        """Whether someone deleted this job's result."""
        return self.deleted_by is not None

    @property
    def platform(self) -> str:
        """The chat platform the job came from (which adapter delivers it)."""
        return self.requester.platform

    @property
    def slots(self) -> int:
        """The generator's image slots the job takes: its images (a describe job reads, drawing nothing)."""
        return 0 if self.kind is Kind.DESCRIBE else self.options.count

    @property
    def remix_strength(self) -> Strength | None:
        """What a remix of this job makes: variations of its source image at this strength (a variation's own;
        strong for an upscale, so that the edited prompt shows), or None: a reroll."""
        if self.kind is Kind.VARIATION:
            return self.strength or Strength.SUBTLE
        return Strength.STRONG if self.kind is Kind.UPSCALE else None


@dataclass(frozen=True)
class Image:
    """One stored image of a finished job."""

    job_id: str
    index: int
    path: str  # relative to the data directory
    seed: int
    tokens: list[int] = field(repr=False)  # row-major token grid


# -- events a handle streams; exactly one final event (Done, Failed or Cancelled) ends each stream --


@dataclass(frozen=True)
class Queued:
    job_id: str
    position: int  # 1 is next


@dataclass(frozen=True)
class Started:
    job_id: str


@dataclass(frozen=True)
class Progress:
    job_id: str
    percent: int
    preview: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Done:
    job_id: str
    seed: int
    grid: bytes = field(repr=False)
    images: list[bytes] = field(repr=False)


@dataclass(frozen=True)
class Described:
    """A describe job's prompts, each one that would draw the picture."""

    job_id: str
    seed: int
    prompts: list[str]


@dataclass(frozen=True)
class Failed:
    job_id: str
    reason: str


@dataclass(frozen=True)
class Cancelled:
    job_id: str


Event = Queued | Started | Progress | Done | Described | Failed | Cancelled
FINAL_EVENTS = (Done, Described, Failed, Cancelled)


class Handle:
    """A job's events as they happen: iterate it until the final one (Done, Failed or Cancelled)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._events: asyncio.Queue[Event] = asyncio.Queue()

    def put(self, event: Event) -> None:
        """Hand over one event (the service does this)."""
        self._events.put_nowait(event)

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, FINAL_EVENTS):
                return

    async def final(self) -> Event:
        """Wait for the final event, skipping the others."""
        async for event in self:
            if isinstance(event, FINAL_EVENTS):
                return event
        raise AssertionError("a stream ends with its final event")


def ending(job: Job) -> str:
    """The operator's log line for a job that ended: what and whose it was, how it ended, how long it took."""
    n, what = job.options.count, "prompt" if job.kind is Kind.DESCRIBE else "image"
    images = "" if job.kind is Kind.UPSCALE else f", {n} {what}{'s' * (n != 1)}"
    line = f"job {job.id} ({job.kind.value}{images}, {job.requester.user_key}): {job.status.value}"
    if job.finished_at is not None:
        line += f" in {job.finished_at - job.created_at:.1f}s"
        if job.started_at is not None:
            line += f" (waited {job.started_at - job.created_at:.1f}s)"
    return line + (f": {job.error}" if job.status is Status.FAILED and job.error else "")
