"""Pictures users attach to /imagine: fetched from Discord's CDN, never more than the size limit and a little."""

from __future__ import annotations

import discord

from bot.adapters.download import PAST_LIMIT, download, too_large
from bot.jobs import Refused

UNFETCHED = "I could not fetch that picture from Discord; attach it again."


async def fetch(attachment: discord.Attachment, max_bytes: int) -> bytes:
    """The attachment's bytes for the core to check, or Refused: too large as Discord describes it (then nothing is
    read), too large as it arrives, or out of reach."""
    if attachment.size > max_bytes + PAST_LIMIT:
        raise Refused(too_large(attachment.size, max_bytes))
    return await download(attachment.url, max_bytes, UNFETCHED)
