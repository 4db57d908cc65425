"""Pictures shared in Slack that a job starts from: found with files.info, fetched from their private URL with the
bot token (files:read), never more than the size limit and a little."""

from __future__ import annotations

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack.api import SlackProblem, call
from bot.jobs import Refused

# Read this far past the limit, so that a file just over it reaches the core, which says by how much.
PAST_LIMIT = 64 * 1024
FETCH_TIMEOUT_S = 60.0
GONE = ("I cannot find that picture in Slack any more (deleted, or in a conversation I am not in); share it again "
        "where I am and use Vary with janus on that message.")  # fmt: skip
UNFETCHED = "I could not fetch that picture from Slack; try again in a minute."
NO_ACCESS = ("Slack did not let me download that picture; ask a workspace admin to give this app the files:read "
             "permission and reinstall it, then try again.")  # fmt: skip


def too_large(size: int, max_bytes: int, *, more: bool = False) -> str:
    """The sentence for a file bigger than the limit (the core's, for a file it never sees)."""
    return (f"That file is {'more than ' if more else ''}{size / 2**20:.1f} MB; send a picture of at most "
            f"{max_bytes / 2**20:g} MB.")  # fmt: skip


def too_large_to_fetch(file: dict[str, object], max_bytes: int) -> str | None:
    """Why a file is not worth fetching, as Slack describes it (its size), or None."""
    size = file.get("size")
    if isinstance(size, int) and size > max_bytes + PAST_LIMIT:
        return too_large(size, max_bytes)
    return None


async def fetch(client: AsyncWebClient, file_id: str, max_bytes: int) -> bytes:
    """A shared file's bytes for the core to check, or Refused: gone, too large as Slack describes it (then
    nothing is read) or as it arrives, or out of reach. SlackProblem for what files.info refuses."""
    try:
        info = await call(client.files_info, file=file_id)
    except SlackProblem as problem:
        if problem.error in ("file_not_found", "file_deleted"):
            raise Refused(GONE) from None
        raise
    file: dict[str, object] = info.get("file") or {}
    if (why := too_large_to_fetch(file, max_bytes)) is not None:
        raise Refused(why)
    url = str(file.get("url_private_download") or file.get("url_private") or "")
    if not url:
        raise Refused(GONE)
    limit = max_bytes + PAST_LIMIT
    data = bytearray()
    try:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        headers = {"Authorization": f"Bearer {client.token}"}
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, headers=headers) as response:
            if response.status in (401, 403) or response.content_type == "text/html":  # Slack's sign-in page
                raise Refused(NO_ACCESS)
            if response.status != 200:
                raise Refused(UNFETCHED)
            async for piece in response.content.iter_chunked(64 * 1024):
                data += piece
                if len(data) > limit:  # bigger than Slack said: stop here
                    raise Refused(too_large(limit, max_bytes, more=True))
    except (aiohttp.ClientError, TimeoutError):
        raise Refused(UNFETCHED) from None
    return bytes(data)
