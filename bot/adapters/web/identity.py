"""Who asks on the web: an identity from a credential nobody can change by typing, and the name they give to show."""

from __future__ import annotations

import hmac
import unicodedata
from dataclasses import dataclass

from bot.adapters.web.origin import is_loopback
from bot.config import ConfigError

LOCAL = "local"  # a client of this machine with no token: the operator's own console
TOKEN = "token"  # whoever sends the access token, JANUS_BOT_WEB_TOKEN
ADMIN = "admin"  # whoever sends the admin token, JANUS_BOT_WEB_ADMIN_TOKEN: an admin of the web server
MAX_NAME_CHARS = 64
NAME_HINT = f'Give your name in "user", 1 to {MAX_NAME_CHARS} characters on one line.'


class Unauthorized(Exception):
    """A request without the token this server needs, or with a wrong one; the message says which."""


@dataclass(frozen=True)
class Who:
    """The identity a request acts as."""

    user: str  # the Requester's user: what limits, bans, ownership and admin rights go by
    is_admin: bool = False  # an admin of the web server (cancels anyone's web jobs)


def client(remote: str | None) -> str:
    """One key per client machine: every loopback address is this machine."""
    return LOCAL if remote is None or is_loopback(remote) else remote


class Credentials:
    """The web tokens; `who` tells which identity a request's Authorization header (or address) stands for."""

    def __init__(self, token: str | None, admin_token: str | None) -> None:
        if token and admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
            raise ConfigError("JANUS_BOT_WEB_ADMIN_TOKEN is JANUS_BOT_WEB_TOKEN; give the admin a token of their own")
        self.token = token
        self.admin_token = admin_token

    def who(self, authorization: str | None, remote: str | None) -> Who:
        """The identity of a request, or Unauthorized saying what to send."""
        if authorization is None or not (self.token or self.admin_token):
            if self.token:
                raise Unauthorized("This server needs an access token; send it as 'Authorization: Bearer <token>'.")
            return Who(client(remote))
        scheme, _, given = authorization.strip().partition(" ")
        try:  # header bytes that are not UTF-8 reach us as surrogate escapes
            offered = given.strip().encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            offered = b""
        if scheme.lower() == "bearer" and offered:
            if self.admin_token and hmac.compare_digest(offered, self.admin_token.encode()):
                return Who(ADMIN, is_admin=True)
            if self.token and hmac.compare_digest(offered, self.token.encode()):
                return Who(TOKEN)
        if self.token:
            raise Unauthorized("The access token is wrong; send the one in JANUS_BOT_WEB_TOKEN.")
        raise Unauthorized("That token is wrong; send the admin token (JANUS_BOT_WEB_ADMIN_TOKEN), or none.")


def shown_name(typed: object) -> str:
    """The name to show for what someone typed: NFKC, without invisible format characters, spaces collapsed.

    Control characters are refused rather than dropped: a new line in a name would start a line of its own
    wherever the name is written. ValueError says what to give instead.
    """
    if not isinstance(typed, str):
        raise ValueError(NAME_HINT)
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in typed):
        raise ValueError(f'"user" has a control character (such as a new line or a tab) in it. {NAME_HINT}')
    text = "".join(c for c in unicodedata.normalize("NFKC", typed) if unicodedata.category(c) != "Cf")
    text = " ".join(text.split())  # also the line and paragraph separators
    if not text or len(text) > MAX_NAME_CHARS:
        raise ValueError(NAME_HINT)
    return text
