"""Slack: `/imagine` and `/imagine-admin` slash commands, message shortcuts and job buttons, over Socket Mode or signed
HTTP."""

from __future__ import annotations

from bot.adapters.slack.adapter import SlackAdapter

__all__ = ["SlackAdapter"]
