"""Pictures users attach to /imagine: fetched from Discord's CDN, never more than the size limit and a little."""

from __future__ import annotations

import aiohttp
import discord

from bot.jobs import Refused

# Read this far past the limit, so that a file just over it reaches the core, which says by how much.
PAST_LIMIT = 64 * 1024
FETCH_TIMEOUT_S = 60.0
UNFETCHED = "I could not fetch that picture from Discord; attach it again."


def too_large(size: int, max_bytes: int, *, more: bool = False) -> str:
    """The sentence for a file bigger than the limit (the core's, for a file it never sees)."""
    return (f"That file is {'more than ' if more else ''}{size / 2**20:.1f} MB; send a picture of at most "
            f"{max_bytes / 2**20:g} MB.")  # fmt: skip


async def fetch(attachment: discord.Attachment, max_bytes: int) -> bytes:
    """The attachment's bytes for the core to check, or Refused: too large as Discord describes it (then nothing is
    read), too large as it arrives, or out of reach."""
    limit = max_bytes + PAST_LIMIT
    if attachment.size > limit:
        raise Refused(too_large(attachment.size, max_bytes))
    data = bytearray()
    try:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(attachment.url) as response:
            if response.status != 200:
                raise Refused(UNFETCHED)
            async for piece in response.content.iter_chunked(64 * 1024):
                data += piece
                if len(data) > limit:  # bigger than Discord said: stop here
                    raise Refused(too_large(limit, max_bytes, more=True))
    except (aiohttp.ClientError, TimeoutError):
        raise Refused(UNFETCHED) from None
    return bytes(data)
