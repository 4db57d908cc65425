"""Pictures users give the bot (attached to /imagine or /describe, or in a message they describe): fetched from
Discord's CDN, never more than the size limit and a little."""

from __future__ import annotations

import discord

from bot.adapters.download import PAST_LIMIT, download, too_large
from bot.jobs import Refused

UNFETCHED = "I could not fetch that picture from Discord; attach it again."
NO_PICTURE = ("That message has no picture to describe; use Describe on a message with an image in it, or attach "
              "one to /describe.")  # fmt: skip
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")  # what the core takes, when Discord gives no type


def picture_of(message: discord.Message) -> discord.Attachment | str | None:
    """The first picture a message shows: an attached image, else an embed's image or thumbnail (the URL of
    Discord's copy when it has one); None when it shows none. Whether it really is a picture is the core's to say."""
    for attachment in message.attachments:
        kind = attachment.content_type or ""
        if kind.startswith("image/") or not kind and attachment.filename.lower().endswith(PICTURE_SUFFIXES):
            return attachment
    for embed in message.embeds:
        for shown in (embed.image, embed.thumbnail):
            if url := shown.proxy_url or shown.url:
                return url
    return None


async def fetch(picture: discord.Attachment | str, max_bytes: int) -> bytes:
    """The picture's bytes for the core to check (an attachment, or an embed's picture by its URL), or Refused:
    too large as Discord describes an attachment (then nothing is read), too large as it arrives, or out of reach."""
    if isinstance(picture, str):
        return await download(picture, max_bytes, UNFETCHED)
    if picture.size > max_bytes + PAST_LIMIT:
        raise Refused(too_large(picture.size, max_bytes))
    return await download(picture.url, max_bytes, UNFETCHED)
