"""Block Kit payloads for a job's message and the ids its buttons carry; pure functions of their arguments."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.jobs import REGIONS, Job, Kind, Region, Strength
from generator.protocol import MAX_PROMPT_CHARS

Block = dict[str, Any]
ACTION_PREFIX = "imagine:"
REMIX_VIEW = "imagine:remix"  # the remix modal's callback id
PICTURE_SHORTCUT = "imagine:picture"  # the "Vary with janus" message shortcut's callback id (slack-manifest.yml)
PICTURE_VIEW = "imagine:picture-form"  # the callback id of the modal it opens
DESCRIBE_SHORTCUT = "imagine:describe"  # the "Describe with janus" message shortcut (slack-manifest.yml)
MENU_OPTIONS = 100  # Slack's limit per select menu, its option groups together
REGION_MENU_IMAGES = 8  # a grid's images per Vary (Region) menu: 8 x 9 regions fit in one
SECTION_CHARS = 3000  # Slack's limit on a section's text
_VERBS = ("reroll", "upscale", "vary", "cancel", "remix", "info", "delete", "prompt")
_WHOLE_JOB = ("reroll", "cancel", "remix", "info", "delete")  # the verbs that take no image index


@dataclass(frozen=True)
class Button:
    """What a clicked button asks for: `verb` on job `job_id`, image `index` (0-based) for upscale and vary, a
    describe job's prompt `index` for "Imagine k"."""

    verb: str  # reroll | upscale | vary | region | cancel | remix | info | delete | prompt
    job_id: str
    index: int | None = None
    strength: Strength = Strength.SUBTLE
    region: str | None = None  # Vary (Region): the region's name, a key of REGIONS


def action_id(verb: str, index: int | None = None, strength: Strength | None = None) -> str:
    """The action id of a button: unique within its message; the job id travels in the value."""
    parts = [f"{ACTION_PREFIX}{verb}"]
    if index is not None:
        parts.append(str(index))
    if strength is not None:
        parts.append(strength.value)
    return ":".join(parts)


def parse_button(action: str, value: str) -> Button | None:
    """The request behind a click or a pick from a menu (None for one this bot did not make)."""
    if not action.startswith(ACTION_PREFIX) or not value:
        return None
    verb, *rest = action.removeprefix(ACTION_PREFIX).split(":")
    if verb == "pick" and rest[:1] == ["region"]:  # the chosen option's value is "<job id>:<image index>:<region>"
        job_id, _, choice = value.partition(":")
        image, _, region = choice.partition(":")
        if not job_id or not image.isdigit() or region not in REGIONS:
            return None
        return Button("region", job_id, int(image), region=region)
    if verb == "pick" and rest:  # a select menu: the chosen option's value is "<job id>:<image index>"
        value, _, picked = value.partition(":")
        verb, rest = rest[0], [picked, *rest[1:]]
    if verb not in _VERBS or not value:
        return None
    try:
        index = int(rest[0]) if rest else None
        strength = Strength(rest[1]) if len(rest) > 1 else Strength.SUBTLE
    except ValueError:
        return None
    if (index is None) != (verb in _WHOLE_JOB):
        return None
    return Button(verb, value, index, strength)


def escape(text: str) -> str:
    """Text safe inside mrkdwn: Slack's three control characters escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def described_picture(job: Job) -> str:
    """The picture a describe job reads: one shared, or an image of one of the bot's jobs."""
    return "a picture" if job.parent_id is None else f"image {(job.parent_index or 0) + 1} of job `{job.parent_id}`"


def subject(job: Job, chars: int = MAX_PROMPT_CHARS) -> str:
    """What a job is about, escaped: its prompt (its first `chars` characters), or for a describe job, which has
    none, the picture it reads."""
    return f"Prompts for {described_picture(job)}" if job.kind is Kind.DESCRIBE else escape(job.prompt[:chars])


def fallback(job: Job, status: str) -> str:
    """A message's plain `text` (notifications, screen readers): the prompt escaped like the blocks, so that
    `<!channel>` or a link typed in a prompt is shown, never acted on."""
    return f"{subject(job)}: {status}"


def unescape(text: str) -> str:
    """Slash command text as typed: Slack sends &, < and > escaped."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _image(file_id: str, alt: str) -> Block:
    # No block_id: Slack wants a new one on every edit of the message, and picks one itself.
    return {"type": "image", "slack_file": {"id": file_id}, "alt_text": alt[:2000]}


def _button(text: str, action: str, job_id: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": text, "emoji": True},
        "action_id": action,
        "value": job_id,
    }
    if style:
        button["style"] = style
    return button


def region_name(region: Region | None) -> str:
    """A region as menus name it ("bottom half"), or its four fractions when it is none of those."""
    if region is None:
        return "bottom half"
    named = next((name for name, r in REGIONS.items() if r == tuple(region)), None)
    return named or ",".join(f"{v:g}" for v in region)


def _what(job: Job) -> str:
    """The headline of a job's message: who asked for what."""
    if job.kind is Kind.DESCRIBE:
        return f"*{subject(job)}* - <@{job.requester.user}>"
    prompt = f"*{escape(job.prompt)}*"
    parent = job.parent_index + 1 if job.parent_index is not None else 0
    kind = {
        Kind.IMAGINE: f" (from a picture, {region_name(job.region)} made again)" if job.source else "",
        Kind.REROLL: " (reroll)",
        Kind.VARIATION: f" (variations of image {parent}, {(job.strength or Strength.SUBTLE).value})",
        Kind.UPSCALE: f" (image {parent}, upscaled)",
        Kind.REGION: f" (Vary (Region, {region_name(job.region)}) of image {parent})",
    }[job.kind]
    negative = f" --no {escape(job.options.negative)}" if job.options.negative else ""
    return f"{prompt}{negative}{kind} - <@{job.requester.user}>"


def _details(job: Job) -> str:
    o = job.options
    if job.kind is Kind.DESCRIBE:  # a describe job reads: guidance is for drawing
        return f"seed {job.seed} · {_counted(o.count, 'prompt')} · temperature {o.temperature:g}"
    return f"seed {job.seed} · {_counted(o.count, 'image')} · cfg {o.cfg:g} · temperature {o.temperature:g}"


def _counted(n: int, what: str) -> str:
    return f"{n} {what}{'s' * (n != 1)}"


def waiting_blocks(job: Job, status: str, preview_file: str | None = None) -> list[Block]:
    """A job that is queued or generating: its status line, the latest preview and a cancel button."""
    blocks = [_section(f"{_what(job)}\n{status}")]
    if preview_file:
        blocks.append(_image(preview_file, f"Preview: {job.prompt}"))
    blocks.append({"type": "actions", "elements": [_button("Cancel", action_id("cancel"), job.id, "danger")]})
    return blocks


def queued_status(position: int) -> str:
    """The status line of a waiting job."""
    return "⏳ Starting now…" if position <= 0 else f"⏳ Queued, position {position}."


def started_status(job: Job) -> str:
    """The status line of a job the generator has just taken."""
    return "📖 Reading the picture…" if job.kind is Kind.DESCRIBE else progress_status(0)


def progress_status(percent: int) -> str:
    """The status line of a job being generated."""
    filled = percent // 10
    return f"🎨 Generating… {percent}%  `{'█' * filled}{'░' * (10 - filled)}`"


def _own_buttons(job: Job) -> list[dict[str, Any]]:
    return [_button("ℹ️ Info", action_id("info"), job.id), _button("🗑️ Delete", action_id("delete"), job.id, "danger")]


def _plain_option(text: str, value: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": text}, "value": value}


def _region_options(job_id: str, index: int) -> list[dict[str, Any]]:
    """The regions of one image, each option's value "<job id>:<image index>:<region>"."""
    return [_plain_option(name.capitalize(), f"{job_id}:{index}:{name}") for name in REGIONS]


def _region_menus(job: Job) -> list[dict[str, Any]]:
    """Vary (Region) on a grid: each image a group of its regions, as many menus as Slack's 100 options need."""
    n = job.options.count
    menus = []
    for first in range(0, n, REGION_MENU_IMAGES):
        images = range(first, min(first + REGION_MENU_IMAGES, n))
        which = "" if n <= REGION_MENU_IMAGES else f" {images[0] + 1}-{images[-1] + 1}"
        menus.append({
            "type": "static_select",
            "action_id": f"{ACTION_PREFIX}pick:region:{first // REGION_MENU_IMAGES}",
            "placeholder": {"type": "plain_text", "text": f"Vary (Region){which}…"},
            "option_groups": [{"label": {"type": "plain_text", "text": f"Image {i + 1}"},
                               "options": _region_options(job.id, i)} for i in images],
        })  # fmt: skip
    return menus


def done_blocks(job: Job, grid_file: str | None, note: str | None = None) -> list[Block]:
    """A finished job: the grid, reroll and remix, menus of strong variations and Vary (Region), U1..Un and V1..Vn
    buttons, then info and delete (an upscale shows just its image, with remix, info, delete and a menu of its
    regions)."""
    blocks = [_section(_what(job)), _context(_details(job))]
    if grid_file:
        blocks.append(_image(grid_file, job.prompt))
    if note:
        blocks.append(_context(note))
    remix = _button("✏️ Remix", action_id("remix"), job.id)
    if job.kind is Kind.UPSCALE:  # the image's tokens live with its grid: a region is varied there
        regions = {
            "type": "static_select",
            "action_id": f"{ACTION_PREFIX}pick:region",
            "placeholder": {"type": "plain_text", "text": "Vary (Region)…"},
            "options": _region_options(job.parent_id or job.id, job.parent_index or 0),
        }
        blocks.append({"type": "actions", "elements": [remix, *_own_buttons(job), regions]})
        return blocks
    n = job.options.count
    strong = {
        "type": "static_select",
        "action_id": f"{ACTION_PREFIX}pick:vary:{Strength.STRONG.value}",
        "placeholder": {"type": "plain_text", "text": "Vary (strong)…"},
        "options": [
            {"text": {"type": "plain_text", "text": f"V{i + 1} strong"}, "value": f"{job.id}:{i}"} for i in range(n)
        ],
    }
    first_row = [_button("🔄 Reroll", action_id("reroll"), job.id), remix, strong, *_region_menus(job)]
    blocks.append({"type": "actions", "elements": first_row})
    blocks.append(
        {"type": "actions", "elements": [_button(f"U{i + 1}", action_id("upscale", i), job.id) for i in range(n)]}
    )
    blocks.append(
        {
            "type": "actions",
            "elements": [_button(f"V{i + 1}", action_id("vary", i, Strength.SUBTLE), job.id) for i in range(n)],
        }
    )
    blocks.append({"type": "actions", "elements": _own_buttons(job)})
    return blocks


def _one_line(text: str) -> str:
    """A prompt on one line, so that the numbering holds (the model may answer with line breaks)."""
    return " ".join(text.split())


def _clipped(text: str, chars: int) -> str:
    """Text escaped for mrkdwn and cut to `chars` characters, never inside an escape."""
    escaped = escape(text)
    if len(escaped) <= chars:
        return escaped
    cut = escaped[: chars - 1]
    if (amp := cut.rfind("&")) >= 0 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def described_blocks(job: Job, prompts: Sequence[str]) -> list[Block]:
    """A finished describe job: its prompts numbered as the buttons are, each cut to fit its section, then
    "Imagine 1".."Imagine N" (whoever presses one gets their own /imagine of that prompt, whole, as the job stores
    it), then info and delete."""
    blocks = [_section(_what(job)), _context(_details(job))]
    for number, prompt in enumerate(prompts, start=1):
        head = f"*{number}.* "
        blocks.append(_section(head + _clipped(_one_line(prompt), SECTION_CHARS - len(head))))
    if prompts:
        imagine = [_button(f"Imagine {i + 1}", action_id("prompt", i), job.id) for i in range(len(prompts))]
        blocks.append({"type": "actions", "elements": imagine})
    blocks.append({"type": "actions", "elements": _own_buttons(job)})
    return blocks


def ended_blocks(job: Job, line: str) -> list[Block]:
    """A job that failed or was cancelled: what happened, and no buttons but reroll (none for an upscale or a
    describe job, which have no prompt of their own to make again)."""
    blocks = [_section(f"{_what(job)}\n{line}")]
    if job.kind not in (Kind.UPSCALE, Kind.DESCRIBE):
        blocks.append({"type": "actions", "elements": [_button("🔄 Try again", action_id("reroll"), job.id)]})
    return blocks


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def _input(block_id: str, label: str, initial: str | None, hint: str, *, optional: bool = False) -> Block:
    element: dict[str, Any] = {"type": "plain_text_input", "action_id": block_id, "multiline": True,
                               "max_length": MAX_PROMPT_CHARS}  # fmt: skip
    if initial:
        element["initial_value"] = initial
    return {"type": "input", "block_id": block_id, "label": _plain(label), "element": element, "hint": _plain(hint),
            "optional": optional}  # fmt: skip


def remix_view(job: Job, channel: str, thread_ts: str | None) -> dict[str, Any]:
    """The remix modal, prefilled with the job's prompt and negative prompt; its metadata says which job and where
    the new one is shown."""
    strength = job.remix_strength
    index = (job.parent_index or 0) + 1
    what = "A reroll" if strength is None else f"A {strength.value} variation of image {index}"
    title = "Remix" if strength is None else f"Remix: vary image {index}"
    if job.kind is Kind.REGION:
        title = "Remix: Vary (Region)"
        what = f"Vary (Region) of image {index}, its {region_name(job.region)} made again,"
    return {
        "type": "modal",
        "callback_id": REMIX_VIEW,
        "private_metadata": json.dumps({"job": job.id, "channel": channel, "thread": thread_ts}),
        "title": _plain(title),  # 24 characters at most
        "submit": _plain("Make it"),
        "close": _plain("Cancel"),
        "blocks": [
            _context(f"{what} with the text below; the new job is yours."),
            _input("prompt", "Prompt", job.prompt, "What to draw."),
            _input("negative", "Not in the picture (--no)", job.options.negative,
                   "What guidance steers away from; leave it empty for nothing.", optional=True),
        ],  # fmt: skip
    }


def picture_view(file: dict[str, Any], channel: str, thread_ts: str | None) -> dict[str, Any]:
    """The "Vary with janus" modal over a shared picture: the prompt, the region made again (the bottom half unless
    changed) and a negative prompt; its metadata says which file and where the job is shown."""
    regions = [_plain_option(name.capitalize(), name) for name in REGIONS]
    bottom = next(o for o in regions if o["value"] == "bottom half")
    name = escape(str(file.get("name") or "the picture"))
    return {
        "type": "modal",
        "callback_id": PICTURE_VIEW,
        "private_metadata": json.dumps({"file": file["id"], "channel": channel, "thread": thread_ts}),
        "title": _plain("Vary with janus"),
        "submit": _plain("Make it"),
        "close": _plain("Cancel"),
        "blocks": [
            _context(f"Starts from *{name}*: the region you pick is made again to fit the prompt, the rest is kept. "
                     "The new job is yours, shown where the picture is."),
            _input("prompt", "Prompt", None, "What the picture should show."),
            {"type": "input", "block_id": "region", "label": _plain("Region made again"),
             "element": {"type": "static_select", "action_id": "region", "options": regions, "initial_option": bottom},
             "hint": _plain("The rest of the picture is kept.")},
            _input("negative", "Not in the picture (--no)", None,
                   "What guidance steers away from; leave it empty for nothing.", optional=True),
        ],  # fmt: skip
    }


def _seconds(start: float | None, end: float | None) -> str:
    return "-" if start is None or end is None else f"{max(end - start, 0):.1f} s"


def info_text(job: Job) -> str:
    """Everything about a job, for the person who asked to see it: prompt (a describe job's prompts, whole),
    negative, the exact seed, options, model, who, when, how long it waited and ran, and what it was made from."""
    o = job.options
    when = int(job.created_at)
    fallback = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(job.created_at))
    images = f"{o.count}" if job.kind is not Kind.UPSCALE else "1, upscaled"
    options = f"*Images:* {images} · *cfg:* {o.cfg:g}"
    if job.kind is Kind.DESCRIBE:
        numbered = [f"{i}. {escape(_one_line(p))}" for i, p in enumerate(job.prompts or (), start=1)]
        lines = ["*Prompts:*", *numbered] if numbered else [f"*{subject(job)}*, once it is read."]
        options = f"*Prompts:* {o.count}"  # a describe job reads: guidance is for drawing
    else:
        lines = [f"*Prompt:* {escape(job.prompt)}"]
    if o.negative:
        lines.append(f"*Not (--no):* {escape(o.negative)}")
    lines += [
        f"*Seed:* `{job.seed}`",
        f"{options} · *Temperature:* {o.temperature:g} · *Model:* `{escape(job.model or 'unknown')}`",
        f"*By:* <@{job.requester.user}> <!date^{when}^{{date_short_pretty}} at {{time}}|{fallback}> · "
        f"waited {_seconds(job.created_at, job.started_at)}, ran {_seconds(job.started_at, job.finished_at)}",
    ]
    if job.parent_id:
        parent = f"image {(job.parent_index or 0) + 1} of job `{job.parent_id}`"
        made = {
            Kind.REROLL: f"reroll of job `{job.parent_id}`",
            Kind.VARIATION: f"{(job.strength or Strength.SUBTLE).value} variations of {parent}",
            Kind.UPSCALE: f"upscale of {parent}",
            Kind.REGION: f"Vary (Region, {region_name(job.region)}) of {parent}",
            Kind.DESCRIBE: parent,
        }.get(job.kind)
        if made:
            lines.append(f"*Made from:* {made}")
    elif job.kind is Kind.DESCRIBE:
        lines.append("*Made from:* a picture")
    elif job.source:
        lines.append(f"*Made from:* a picture, {region_name(job.region)} made again")
    lines.append(f"*Job:* `{job.id}` ({job.status.value})")
    return "\n".join(lines)
