"""Discord: /imagine, /describe and /imagine-admin slash commands, the Describe message menu and persistent
buttons, with discord.py."""

from __future__ import annotations

from bot.adapters.discord.adapter import DiscordAdapter

__all__ = ["DiscordAdapter"]
