"""Pictures fetched from a chat platform for the core: never more than the size limit and a little."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import aiohttp

from bot.jobs import Refused

# Read this far past the limit, so that a file just over it reaches the core, which says by how much.
PAST_LIMIT = 64 * 1024
FETCH_TIMEOUT_S = 60.0


def too_large(size: int, max_bytes: int, *, more: bool = False) -> str:
    """The sentence for a file bigger than the limit (the core's, for a file it never sees)."""
    return (f"That file is {'more than ' if more else ''}{size / 2**20:.1f} MB; send a picture of at most "
            f"{max_bytes / 2**20:g} MB.")  # fmt: skip


async def download(url: str, max_bytes: int, unfetched: str, *, headers: Mapping[str, str] | None = None,
                   refusal: Callable[[aiohttp.ClientResponse], str | None] = lambda response: None) -> bytes:
    """The bytes at `url`, or Refused: `refusal`'s sentence for the response, `unfetched` when it is out of reach,
    or too large as it arrives (bigger than the platform said: reading stops there)."""
    limit = max_bytes + PAST_LIMIT
    data = bytearray()
    try:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, headers=headers) as response:
            if (why := refusal(response)) is not None:
                raise Refused(why)
            if response.status != 200:
                raise Refused(unfetched)
            async for piece in response.content.iter_chunked(64 * 1024):
                data += piece
                if len(data) > limit:
                    raise Refused(too_large(limit, max_bytes, more=True))
    except (aiohttp.ClientError, TimeoutError):
        raise Refused(unfetched) from None
    return bytes(data)
