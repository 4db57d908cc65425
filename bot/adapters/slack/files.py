"""Pictures shared in Slack that a job starts from: found with files.info, fetched from their private URL with the
bot token (files:read), never more than the size limit and a little."""

from __future__ import annotations

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.download import PAST_LIMIT, download, too_large
from bot.adapters.slack.api import SlackProblem, call
from bot.jobs import Refused

GONE = ("I cannot find that picture in Slack any more (deleted, or in a conversation I am not in); share it again "
        "where I am and use the shortcut on the new message.")  # fmt: skip
UNFETCHED = "I could not fetch that picture from Slack; try again in a minute."
NO_ACCESS = ("Slack did not let me download that picture; ask a workspace admin to give this app the files:read "
             "permission and reinstall it, then try again.")  # fmt: skip


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
    headers = {"Authorization": f"Bearer {client.token}"}
    return await download(url, max_bytes, UNFETCHED, headers=headers, refusal=_sign_in)


def _sign_in(response: aiohttp.ClientResponse) -> str | None:
    """NO_ACCESS when Slack answers with its sign-in page instead of the file (no files:read), else None."""
    if response.status in (401, 403) or response.content_type == "text/html":
        return NO_ACCESS
    return None
