"""Where requests may come from: the Host names the web adapter answers to, and writes from its own page only."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from bot.config import WebSettings

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
DEFAULT_PORTS = {"http": 80, "https": 443}
SAME_ORIGIN_SITES = frozenset({"same-origin", "none"})  # Sec-Fetch-Site of the page's own requests, of typed URLs


def split_authority(authority: str) -> tuple[str, str]:
    """The lower-case name (no brackets, no final dot) and the port text of a Host header or an origin."""
    text = authority.strip().lower()
    if text.startswith("["):
        name, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        name, _, port = text.partition(":")
    else:
        name, port = text, ""
    return name.removesuffix("."), port


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(address: str | None) -> bool:
    """Whether a client's address is one of this machine's loopback addresses."""
    parsed = _address(address) if address is not None else None
    return parsed is not None and parsed.is_loopback


def _port(text: str, scheme: str) -> int | None:
    if not text:
        return DEFAULT_PORTS.get(scheme)
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 5 else None


def same_origin(origin: str, host: str | None) -> bool:
    """Whether a browser's Origin header names the site the request was sent to (its Host header).

    Only names and ports are compared: behind a TLS proxy the page's origin is https while the proxy speaks
    http to us. A Host without a port has the origin scheme's default one, as browsers send it.
    """
    scheme, sep, authority = origin.strip().lower().partition("://")
    if not sep or scheme not in DEFAULT_PORTS or not authority or host is None or "/" in authority:
        return False  # "null" (sandboxed frames, file: pages) among others
    origin_name, origin_port = split_authority(authority)
    host_name, host_port = split_authority(host)
    port = _port(origin_port, scheme)
    return origin_name == host_name and port is not None and port == _port(host_port, scheme)


class Origins:
    """The Host names this adapter answers to, and whether a write comes from a page of its own."""

    def __init__(self, settings: WebSettings) -> None:
        self._bound = split_authority(settings.host)[0]
        self._wildcard = self._bound in WILDCARD_HOSTS
        self._public = frozenset(settings.public_names)

    def serves(self, host: str) -> bool:
        """Whether a Host header names this bot: the bound host, a loopback name or one of [web] public_names.

        On a wildcard bind any address literal is answered too: DNS rebinding needs a name, and a page whose
        origin is an address of this machine is a page of this machine's.
        """
        name = split_authority(host)[0]
        if name in self._public or name == self._bound or name == "localhost":
            return True
        address = _address(name)
        return address is not None and (address.is_loopback or self._wildcard or address == _address(self._bound))

    @staticmethod
    def cross_site(method: str, headers: Mapping[str, str]) -> bool:
        """Whether a state-changing request was sent by another site's page (a same-origin or absent Origin and
        Sec-Fetch-Site pass: curl sends neither)."""
        if method not in WRITES:
            return False
        site = headers.get("Sec-Fetch-Site")
        if site is not None and site.strip().lower() not in SAME_ORIGIN_SITES:
            return True
        origin = headers.get("Origin")
        return origin is not None and not same_origin(origin, headers.get("Host"))

    @staticmethod
    def vouched_form(headers: Mapping[str, str]) -> bool:
        """Whether a multipart/form-data write shows it is not another site's <form>, which may send multipart
        with no preflight: it carries an Authorization header (no form sends one) or this site's own Origin.

        cross_site() already refuses a foreign Origin; this asks for a positive sign as well, because a browser
        too old to send Origin with a form's POST (Firefox before 70) looks like curl. Scripts send the token,
        the page's fetch sends its Origin, and a picture can always go as base64 in a JSON body instead.
        """
        if headers.get("Authorization") is not None:
            return True
        origin = headers.get("Origin")
        return origin is not None and same_origin(origin, headers.get("Host"))
