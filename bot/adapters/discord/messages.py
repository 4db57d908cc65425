"""What a job's Discord message says and which buttons it carries; pure functions of the job and its event."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import discord

from bot.jobs import REGIONS, Cancelled, Described, Done, Event, Failed, Job, Kind, Progress, Queued, Region, Strength
from generator.protocol import MAX_PROMPT_CHARS

MESSAGE_CHARS = 2000  # Discord's limit for a message's content
PROMPT_CHARS = 1500  # of the escaped prompt: leave room for the rest of the message
NEGATIVE_CHARS = 300  # of the escaped negative prompt in the job's message (info shows it whole)
FIELD_CHARS = 1024  # Discord's limit for an embed field's value
DESCRIPTION_CHARS = 4000  # of an embed's description (Discord's limit is 4096)
BUTTON_ROW = 5  # Discord's limit per action row; wider grids get select menus instead
MENU_OPTIONS = 25  # Discord's limit per select menu: grids of more images pick the image first, then the region
# "prompt": an "Imagine k" button under a describe job's prompts (the index is the prompt's).
BUTTON_ID = (r"imagine:(?P<action>reroll|cancel|upscale|vary|strong|remix|info|delete|prompt):(?P<job>[0-9a-f]+)"
             r"(?::(?P<index>\d+))?$")  # fmt: skip
PICK_ID = r"imagine:pick:(?P<action>upscale|vary|strong|region):(?P<job>[0-9a-f]+)$"
# Vary (Region): with the image in the id the options are regions; without, "<image index>:<region>" pairs.
REGION_ID = r"imagine:region:(?P<job>[0-9a-f]+)(?::(?P<index>\d+))?$"
REMIX_ID = re.compile(r"imagine:remix:(?P<job>[0-9a-f]+)$")  # the remix modal's: its submission names the job
_EMOJI = {"reroll": "🔄", "remix": "✏️", "info": "ℹ️", "delete": "🗑️"}


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=BUTTON_ID):
    """A button whose custom id carries the action, the job and the image, so it works after restarts."""

    def __init__(
        self, action: str, job_id: str, index: int | None = None, *, label: str = "", row: int | None = None
    ) -> None:
        suffix = "" if index is None else f":{index}"
        style = discord.ButtonStyle.danger if action in ("cancel", "delete") else discord.ButtonStyle.secondary
        button: discord.ui.Button = discord.ui.Button(
            label=label or None, emoji=_EMOJI.get(action), style=style, custom_id=f"imagine:{action}:{job_id}{suffix}"
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
        placeholder = {"upscale": "Upscale…", "vary": "Vary (subtle)…", "strong": "Vary (strong)…",
                       "region": "Vary (Region)…"}[action]  # fmt: skip
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


def region_name(region: Region | None) -> str:
    """A region as menus name it ("bottom half"), or its four fractions when it is none of those."""
    if region is None:
        return "bottom half"
    named = next((name for name, r in REGIONS.items() if r == tuple(region)), None)
    return named or ",".join(f"{v:g}" for v in region)


class RegionPick(discord.ui.DynamicItem[discord.ui.Select], template=REGION_ID):
    """A Vary (Region) menu: of one image's regions (under an upscale, or asked after picking an image), or of
    every image and region of a small grid."""

    def __init__(self, job_id: str, index: int | None = None, count: int = 1, *, row: int | None = None) -> None:
        if index is not None:
            options = [discord.SelectOption(label=name.capitalize(), value=name) for name in REGIONS]
        else:
            options = [
                discord.SelectOption(label=name.capitalize() if count == 1 else f"Image {i + 1}: {name.capitalize()}",
                                     value=f"{i}:{name}")
                for i in range(count)
                for name in REGIONS
            ]  # fmt: skip
        suffix = "" if index is None else f":{index}"
        select: discord.ui.Select = discord.ui.Select(
            custom_id=f"imagine:region:{job_id}{suffix}", placeholder="Vary (Region)…", options=options
        )
        super().__init__(select, row=row)
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> RegionPick:
        index = match["index"]
        return cls(match["job"], None if index is None else int(index))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Hand the chosen image and region to the client that received it."""
        value = self.item.values[0] if self.item.values else ""
        if self.index is None:
            picked, _, value = value.partition(":")
            index = int(picked) if picked.isdigit() else 0
        else:
            index = self.index
        await interaction.client.vary_region(interaction, self.job_id, index, value)  # type: ignore[attr-defined]


def region_view(job_id: str, index: int) -> discord.ui.View:
    """The menu of one image's regions, asked after the image was picked from a grid too big for one menu."""
    view = discord.ui.View(timeout=None)
    view.add_item(RegionPick(job_id, index))
    return view


def escaped(text: str, limit: int) -> str:
    """Text a person typed, its markdown and mentions escaped, then cut to `limit` characters (escaping
    lengthens it)."""
    text = discord.utils.escape_mentions(discord.utils.escape_markdown(text))
    if len(text) > limit:
        text = text[: limit - 1]
        if (len(text) - len(text.rstrip("\\"))) % 2:  # never end on half an escape
            text = text[:-1]
        text = text + "…"
    return text


def described_picture(job: Job) -> str:
    """The picture a describe job reads: one sent, or an image of one of the bot's jobs."""
    return "a picture" if job.parent_id is None else f"image {(job.parent_index or 0) + 1} of job `{job.parent_id}`"


def bold_prompt(job: Job) -> str:
    """The prompt in bold, escaped and cut to fit a message (a describe job has none: what it reads)."""
    if job.kind is Kind.DESCRIBE:
        return f"**Prompts for {described_picture(job)}**"
    return f"**{escaped(job.prompt, PROMPT_CHARS)}**"


def fit(text: str) -> str:
    """A message's content within Discord's limit."""
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def _what(job: Job) -> str:
    index = "" if job.parent_index is None else f" of image {job.parent_index + 1}"
    if job.kind is Kind.UPSCALE:
        return f"Upscale{index}"
    if job.kind is Kind.VARIATION:
        return f"Variations ({job.strength or Strength.SUBTLE}){index}"
    if job.kind is Kind.REGION:
        return f"Vary (Region, {region_name(job.region)}){index}"
    if job.kind is Kind.REROLL:
        return "Reroll"
    if job.kind is Kind.DESCRIBE:  # its picture is in the bold part
        return "Describe"
    return f"From a picture ({region_name(job.region)} made again)" if job.source else ""


def header(job: Job) -> str:
    """The first line of a job's message: the prompt (and negative prompt), who asked, and what kind of job it is."""
    what = _what(job)
    negative = f" --no {escaped(job.options.negative, NEGATIVE_CHARS)}" if job.options.negative else ""
    return f"{bold_prompt(job)}{negative} - {what + ' by ' if what else ''}<@{job.requester.user}>"


def text(job: Job, event: Event) -> str:
    """The message for a job in the state `event` leaves it in."""
    return fit(_text(job, event))


def _text(job: Job, event: Event) -> str:
    o = job.options
    if isinstance(event, Described):
        return _prompts(job, event.prompts)
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
        state = "reading the picture" if job.kind is Kind.DESCRIBE else "starting"
    return f"{header(job)} ({state})"


def _prompts(job: Job, prompts: list[str]) -> str:
    """A describe job's answer: its prompts numbered as the Imagine buttons are, each cut to an equal share of the
    message (the buttons take them whole, as stored)."""
    n = len(prompts)
    head = f"{header(job)} ({n} prompt{'s' * (n != 1)})"
    numbers = [f"\n{i}. " for i in range(1, n + 1)]
    share = (MESSAGE_CHARS - len(head) - sum(map(len, numbers))) // max(n, 1)
    return head + "".join(number + escaped(_one_line(prompt), share) for number, prompt in zip(numbers, prompts))


def _one_line(prompt: str) -> str:
    """A prompt on one line, so that the numbering holds (the model may answer with line breaks)."""
    return " ".join(prompt.split())


def working_view(job: Job) -> discord.ui.View:
    """Buttons while a job waits or runs: cancel (its owner or an admin)."""
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton("cancel", job.id, label="Cancel"))
    return view


def _own_buttons(view: discord.ui.View, job: Job, row: int) -> None:
    """Remix, info and delete: what every finished job's message has, for the job itself."""
    view.add_item(JobButton("remix", job.id, label="Remix", row=row))
    view.add_item(JobButton("info", job.id, label="Info", row=row))
    view.add_item(JobButton("delete", job.id, label="Delete", row=row))


def described_view(job: Job, count: int) -> discord.ui.View:
    """Buttons under a describe job's `count` prompts: "Imagine k" (whoever presses it gets their own /imagine of
    prompt k), then info and delete."""
    view = discord.ui.View(timeout=None)
    for i in range(count):
        view.add_item(JobButton("prompt", job.id, i, label=f"Imagine {i + 1}", row=i // BUTTON_ROW))
    row = (count + BUTTON_ROW - 1) // BUTTON_ROW
    view.add_item(JobButton("info", job.id, label="Info", row=row))
    view.add_item(JobButton("delete", job.id, label="Delete", row=row))
    return view


def result_view(job: Job) -> discord.ui.View:
    """Buttons under a finished grid: reroll, remix, info, delete, upscale and variations, each carrying the
    job id."""
    view = discord.ui.View(timeout=None)
    if job.kind is Kind.UPSCALE:  # the image alone: variations of it come from its grid
        parent, index = job.parent_id or job.id, job.parent_index or 0
        view.add_item(JobButton("vary", parent, index, label="Vary (subtle)", row=0))
        view.add_item(JobButton("strong", parent, index, label="Vary (strong)", row=0))
        _own_buttons(view, job, row=0)
        view.add_item(RegionPick(parent, index, row=1))
        return view
    count = job.options.count
    if count <= BUTTON_ROW:
        for i in range(count):
            view.add_item(JobButton("upscale", job.id, i, label=f"U{i + 1}", row=0))
        for i in range(count):
            view.add_item(JobButton("vary", job.id, i, label=f"V{i + 1}", row=1))
        view.add_item(JobButton("reroll", job.id, row=2))
        _own_buttons(view, job, row=2)
        view.add_item(JobPick("strong", job.id, count, row=3))
    else:
        view.add_item(JobButton("reroll", job.id, row=0))
        _own_buttons(view, job, row=0)
        for row, action in enumerate(("upscale", "vary", "strong"), start=1):
            view.add_item(JobPick(action, job.id, count, row=row))
    # The fifth and last row: every image and region in one menu while they fit, else the image first.
    if count * len(REGIONS) <= MENU_OPTIONS:
        view.add_item(RegionPick(job.id, None, count, row=4))
    else:
        view.add_item(JobPick("region", job.id, count, row=4))
    return view


def remix_modal(job: Job) -> discord.ui.Modal:
    """The remix form, prefilled with the job's prompt and negative prompt; its custom id names the job."""
    strength = job.remix_strength
    index = (job.parent_index or 0) + 1
    title = "Remix" if strength is None else f"Remix: vary image {index} ({strength.value})"
    if job.kind is Kind.REGION:
        title = f"Remix: Vary (Region) of image {index}"
    modal = discord.ui.Modal(title=title, custom_id=f"imagine:remix:{job.id}")
    prompt: discord.ui.TextInput = discord.ui.TextInput(
        custom_id="prompt", style=discord.TextStyle.paragraph, default=job.prompt, max_length=MAX_PROMPT_CHARS
    )
    negative: discord.ui.TextInput = discord.ui.TextInput(
        custom_id="negative", style=discord.TextStyle.paragraph, default=job.options.negative, required=False,
        max_length=MAX_PROMPT_CHARS,
    )  # fmt: skip
    modal.add_item(discord.ui.Label(text="Prompt", component=prompt))
    modal.add_item(discord.ui.Label(text="Not in the picture (--no)", component=negative,
                                    description="What guidance steers away from; leave it empty for nothing"))
    return modal


def _seconds(start: float | None, end: float | None) -> str | None:
    return None if start is None or end is None else f"{max(end - start, 0):.1f} s"


def made_from(job: Job) -> str | None:
    """What a job was made from: the reroll, variation, Vary (Region) or upscale of which job, or a picture (None
    for a new one)."""
    what = _what(job)
    if job.kind is Kind.DESCRIBE:
        return described_picture(job).capitalize()
    if job.kind is Kind.IMAGINE and job.source:
        return f"A picture, {region_name(job.region)} made again"
    return f"{what} of job `{job.parent_id}`" if what and job.parent_id else None


def info_embed(job: Job) -> discord.Embed:
    """Everything about a job: prompt (a describe job's prompts), negative, seed (exactly), options, model, who,
    when, how long it waited and ran, and what it was made from."""
    o = job.options
    describe = job.kind is Kind.DESCRIBE
    embed = discord.Embed(description=_listed(job) if describe else escaped(job.prompt, DESCRIPTION_CHARS))
    if o.negative:
        embed.add_field(name="Not (--no)", value=escaped(o.negative, FIELD_CHARS), inline=False)
    fields = {
        "Seed": f"`{job.seed}`",
        "Images": None if describe else str(o.count) if job.kind is not Kind.UPSCALE else "1, upscaled",
        "Prompts": str(o.count) if describe else None,
        "cfg": None if describe else f"{o.cfg:g}",  # a describe job reads: guidance is for drawing
        "Temperature": f"{o.temperature:g}",
        "Model": escaped(job.model or "unknown", FIELD_CHARS),
        "By": f"<@{job.requester.user}>",
        "When": discord.utils.format_dt(datetime.fromtimestamp(job.created_at, UTC), "f"),
        "Waited": _seconds(job.created_at, job.started_at),
        "Ran": _seconds(job.started_at, job.finished_at),
        "Made from": made_from(job),
    }
    for name, value in fields.items():
        if value is not None:
            embed.add_field(name=name, value=value, inline=name != "Made from")
    embed.set_footer(text=f"Job {job.id} · {job.status.value}")
    return embed


def _listed(job: Job) -> str:
    """A describe job's prompts for its info, whole as far as an embed holds them (the message may cut them)."""
    if not job.prompts:
        return f"Prompts for {described_picture(job)}, once it is read."
    numbered = enumerate(job.prompts, start=1)
    text = "\n".join(f"{i}. {escaped(_one_line(prompt), DESCRIPTION_CHARS)}" for i, prompt in numbered)
    return text if len(text) <= DESCRIPTION_CHARS else text[: DESCRIPTION_CHARS - 1] + "…"


def file_name(job: Job, event: Event) -> str:
    """The attachment's name: the grid, the upscaled image, or a preview."""
    if isinstance(event, Progress):
        return "preview.png"
    return f"{job.id}.png" if job.kind is Kind.UPSCALE else f"{job.id}-grid.png"
