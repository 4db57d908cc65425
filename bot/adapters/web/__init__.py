"""The web playground and HTTP API: a page with the /imagine flow, JSON endpoints, /healthz and /metrics."""

from __future__ import annotations

from bot.adapters.web.server import WebAdapter

__all__ = ["WebAdapter"]
