"""Block Kit payloads for a job's message and the ids its buttons carry; pure functions of their arguments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.jobs import Job, Kind, Strength

Block = dict[str, Any]
ACTION_PREFIX = "imagine:"
_VERBS = ("reroll", "upscale", "vary", "cancel")


@dataclass(frozen=True)
class Button:
    """What a clicked button asks for: `verb` on job `job_id`, image `index` (0-based) for upscale and vary."""

    verb: str  # reroll | upscale | vary | cancel
    job_id: str
    index: int | None = None
    strength: Strength = Strength.SUBTLE


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
    if (index is None) != (verb in ("reroll", "cancel")):
        return None
    return Button(verb, value, index, strength)


def escape(text: str) -> str:
    """Text safe inside mrkdwn: Slack's three control characters escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fallback(job: Job, status: str) -> str:
    """A message's plain `text` (notifications, screen readers): the prompt escaped like the blocks, so that
    `<!channel>` or a link typed in a prompt is shown, never acted on."""
    return f"{escape(job.prompt)}: {status}"


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


def _what(job: Job) -> str:
    """The headline of a job's message: who asked for what."""
    prompt = f"*{escape(job.prompt)}*"
    parent = job.parent_index + 1 if job.parent_index is not None else 0
    kind = {
        Kind.IMAGINE: "",
        Kind.REROLL: " (reroll)",
        Kind.VARIATION: f" (variations of image {parent}, {(job.strength or Strength.SUBTLE).value})",
        Kind.UPSCALE: f" (image {parent}, upscaled)",
    }[job.kind]
    return f"{prompt}{kind} - <@{job.requester.user}>"


def _details(job: Job) -> str:
    o = job.options
    images = "1 image" if o.count == 1 else f"{o.count} images"
    return f"seed {job.seed} · {images} · cfg {o.cfg:g} · temperature {o.temperature:g}"


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


def progress_status(percent: int) -> str:
    """The status line of a job being generated."""
    filled = percent // 10
    return f"🎨 Generating… {percent}%  `{'█' * filled}{'░' * (10 - filled)}`"


def done_blocks(job: Job, grid_file: str | None, note: str | None = None) -> list[Block]:
    """A finished job: the grid, reroll, U1..Un and V1..Vn buttons and a menu of strong variations (an upscale
    shows just its image)."""
    blocks = [_section(_what(job)), _context(_details(job))]
    if grid_file:
        blocks.append(_image(grid_file, job.prompt))
    if note:
        blocks.append(_context(note))
    if job.kind is Kind.UPSCALE:
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
    blocks.append({"type": "actions", "elements": [_button("🔄 Reroll", action_id("reroll"), job.id), strong]})
    blocks.append(
        {"type": "actions", "elements": [_button(f"U{i + 1}", action_id("upscale", i), job.id) for i in range(n)]}
    )
    blocks.append(
        {
            "type": "actions",
            "elements": [_button(f"V{i + 1}", action_id("vary", i, Strength.SUBTLE), job.id) for i in range(n)],
        }
    )
    return blocks


def ended_blocks(job: Job, line: str) -> list[Block]:
    """A job that failed or was cancelled: what happened, and no buttons but reroll."""
    blocks = [_section(f"{_what(job)}\n{line}")]
    if job.kind is not Kind.UPSCALE:
        blocks.append({"type": "actions", "elements": [_button("🔄 Try again", action_id("reroll"), job.id)]})
    return blocks
