"""Discord: /imagine and /imagine-admin slash commands and persistent grid buttons, with discord.py."""

from __future__ import annotations

from bot.adapters.discord.adapter import DiscordAdapter

__all__ = ["DiscordAdapter"]
