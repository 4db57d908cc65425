"""What a job's Discord message says and which buttons it carries; pure functions of the job and its event."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.jobs import Cancelled, Done, Event, Failed, Job, Kind, Progress, Queued, Strength

MESSAGE_CHARS = 2000  # Discord's limit for a message's content
PROMPT_CHARS = 1500  # of the escaped prompt: leave room for the rest of the message
BUTTON_ROW = 5  # Discord's limit per action row; wider grids get select menus instead
BUTTON_ID = r"imagine:(?P<action>reroll|cancel|upscale|vary|strong):(?P<job>[0-9a-f]+)(?::(?P<index>\d+))?$"
PICK_ID = r"imagine:pick:(?P<action>upscale|vary|strong):(?P<job>[0-9a-f]+)$"


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=BUTTON_ID):
    """A button whose custom id carries the action, the job and the image, so it works after restarts."""

    def __init__(
        self, action: str, job_id: str, index: int | None = None, *, label: str = "", row: int | None = None
    ) -> None:
        suffix = "" if index is None else f":{index}"
        style = discord.ButtonStyle.danger if action == "cancel" else discord.ButtonStyle.secondary
        emoji = "🔄" if action == "reroll" else None
        button: discord.ui.Button = discord.ui.Button(
            label=label or None, emoji=emoji, style=style, custom_id=f"imagine:{action}:{job_id}{suffix}"
        )
        super().__init__(button, row=row)
        self.action, self.job_id, self.index = action, job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        index = match["index"]
        return cls(match["action"], match["job"], None if index is None else int(index))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Hand the press to the client that received it."""
        await interaction.client.pressed(interaction, self.action, self.job_id, self.index)  # type: ignore[attr-defined]


class JobPick(discord.ui.DynamicItem[discord.ui.Select], template=PICK_ID):
    """A select menu of a grid's images for one action (grids too wide for a row of buttons, strong variations)."""

    def __init__(self, action: str, job_id: str, count: int = 1, *, row: int | None = None) -> None:
        placeholder = {"upscale": "Upscale…", "vary": "Vary (subtle)…", "strong": "Vary (strong)…"}[action]
        select: discord.ui.Select = discord.ui.Select(
            custom_id=f"imagine:pick:{action}:{job_id}",
            placeholder=placeholder,
            options=[discord.SelectOption(label=f"Image {i + 1}", value=str(i)) for i in range(count)],
        )
        super().__init__(select, row=row)
        self.action, self.job_id = action, job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobPick:
        return cls(match["action"], match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        """Hand the chosen image to the client that received it."""
        index = int(self.item.values[0]) if self.item.values else 0
        await interaction.client.pressed(interaction, self.action, self.job_id, index)  # type: ignore[attr-defined]


def bold_prompt(job: Job) -> str:
    """The prompt in bold, its markdown and mentions escaped, then cut to fit a message (escaping lengthens it)."""
    text = discord.utils.escape_mentions(discord.utils.escape_markdown(job.prompt))
    if len(text) > PROMPT_CHARS:
        text = text[: PROMPT_CHARS - 1]
        if (len(text) - len(text.rstrip("\\"))) % 2:  # never end on half an escape
            text = text[:-1]
        text = text + "…"
    return f"**{text}**"


def fit(text: str) -> str:
    """A message's content within Discord's limit."""
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def _what(job: Job) -> str:
    index = "" if job.parent_index is None else f" of image {job.parent_index + 1}"
    if job.kind is Kind.UPSCALE:
        return f"Upscale{index}"
    if job.kind is Kind.VARIATION:
        return f"Variations ({job.strength or Strength.SUBTLE}){index}"
    return "Reroll" if job.kind is Kind.REROLL else ""


def header(job: Job) -> str:
    """The first line of a job's message: the prompt, who asked, and what kind of job it is."""
    what = _what(job)
    return f"{bold_prompt(job)} - {what + ' by ' if what else ''}<@{job.requester.user}>"


def text(job: Job, event: Event) -> str:
    """The message for a job in the state `event` leaves it in."""
    return fit(_text(job, event))


def _text(job: Job, event: Event) -> str:
    o = job.options
    if isinstance(event, Done) and job.kind is Kind.UPSCALE:
        return header(job)
    if isinstance(event, Done):
        images = "1 image" if o.count == 1 else f"{o.count} images"
        return f"{header(job)} ({images}, seed {event.seed}, cfg {o.cfg:g}, temperature {o.temperature:g})"
    if isinstance(event, Failed):
        return f"{header(job)} (failed)\n{event.reason}"
    if isinstance(event, Queued):
        state = "next in line" if event.position <= 1 else f"queued, position {event.position}"
    elif isinstance(event, Progress):
        state = f"generating, {event.percent}%"
    elif isinstance(event, Cancelled):
        state = "cancelled"
    else:
        state = "starting"
    return f"{header(job)} ({state})"


def working_view(job: Job) -> discord.ui.View:
    """Buttons while a job waits or runs: cancel (its owner or an admin)."""
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton("cancel", job.id, label="Cancel"))
    return view


def result_view(job: Job) -> discord.ui.View:
    """Buttons under a finished grid: reroll, upscale and variations, each carrying the job id."""
    view = discord.ui.View(timeout=None)
    if job.kind is Kind.UPSCALE:  # the image alone: variations of it come from its grid
        parent, index = job.parent_id or job.id, job.parent_index or 0
        view.add_item(JobButton("vary", parent, index, label="Vary (subtle)", row=0))
        view.add_item(JobButton("strong", parent, index, label="Vary (strong)", row=0))
        return view
    count = job.options.count
    if count <= BUTTON_ROW:
        for i in range(count):
            view.add_item(JobButton("upscale", job.id, i, label=f"U{i + 1}", row=0))
        for i in range(count):
            view.add_item(JobButton("vary", job.id, i, label=f"V{i + 1}", row=1))
        view.add_item(JobButton("reroll", job.id, row=2))
        view.add_item(JobPick("strong", job.id, count, row=3))
    else:
        view.add_item(JobButton("reroll", job.id, row=0))
        for row, action in enumerate(("upscale", "vary", "strong"), start=1):
            view.add_item(JobPick(action, job.id, count, row=row))
    return view


def file_name(job: Job, event: Event) -> str:
    """The attachment's name: the grid, the upscaled image, or a preview."""
    if isinstance(event, Progress):
        return "preview.png"
    return f"{job.id}.png" if job.kind is Kind.UPSCALE else f"{job.id}-grid.png"
