"""Slack Web API calls with the retries that make sense, and a sentence for each error that remains."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

log = logging.getLogger(__name__)

# Errors worth another try after a pause: Slack's rate limit and its own hiccups.
RETRYABLE = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"})
# The channel is out of reach for good; nothing to retry and nothing to deliver there later.
UNREACHABLE = frozenset({"channel_not_found", "not_in_channel", "is_archived", "channel_is_archived"})


class SlackProblem(Exception):
    """A Web API call that failed for good; the message is a sentence for the user, `error` Slack's code."""

    def __init__(self, message: str, error: str, detail: str = "") -> None:
        super().__init__(message)
        self.error = error
        self.detail = detail or error  # for the operator: what went wrong, e.g. the connection error


def sentence(error: str, needed: str | None = None) -> str:
    """What to tell the user about a Slack error code."""
    if error == "missing_scope":
        scope = needed or "a permission it needs"
        return (
            f"This Slack app is missing the {scope} permission; ask a workspace admin to add it to the app "
            "and reinstall it, then try again."
        )
    if error in UNREACHABLE:
        return "I cannot post in this channel; invite me with /invite, or use /imagine in a channel I am in."
    if error == "ratelimited":
        return "Slack is rate-limiting me right now; try again in a minute."
    if error == "unreachable":
        return "I could not reach Slack; try again in a minute."
    return f"Slack refused my request ({error}); try again, and tell the bot's operator if it keeps happening."


async def call(
    method: Callable[..., Awaitable[AsyncSlackResponse]],
    /,
    *,
    attempts: int = 3,
    max_wait: float = 30.0,
    **kwargs: Any,
) -> AsyncSlackResponse:
    """Call one Web API method (a bound AsyncWebClient method); retry rate limits and Slack's hiccups up to
    `attempts` times, pausing as Slack asks (at most `max_wait` s); other errors raise SlackProblem."""
    name = getattr(method, "__name__", "api call").replace("_", ".", 1)
    for attempt in range(1, attempts + 1):
        last = attempt == attempts
        try:
            return await method(**kwargs)
        except SlackApiError as error:
            response = error.response
            data = response.data if isinstance(response.data, dict) else {}  # a non-JSON answer holds text
            code = str(data.get("error") or f"http_{response.status_code}")
            if (code in RETRYABLE or response.status_code >= 500) and not last:
                wait = float(response.headers.get("Retry-After", response.headers.get("retry-after", attempt)))
                log.warning("Slack %s: %s; retrying in %.0f s", name, code, min(wait, max_wait))
                await asyncio.sleep(min(wait, max_wait))
                continue
            needed = data.get("needed")
            if code == "missing_scope":
                log.error(
                    "Slack %s: missing scope %s (the app has %s); add it under OAuth & Permissions and reinstall",
                    name, needed, data.get("provided"),
                )  # fmt: skip
            else:
                log.warning("Slack %s failed: %s", name, code)
            raise SlackProblem(sentence(code, needed), code) from None
        except (aiohttp.ClientError, SlackRequestError, TimeoutError) as error:
            if not last:
                log.warning("Slack %s: %s; retrying", name, error)
                await asyncio.sleep(attempt)
                continue
            log.warning("Slack %s failed: %s", name, error)
            raise SlackProblem(sentence("unreachable"), "unreachable", str(error)) from None
    raise AssertionError("the last attempt returns or raises")
