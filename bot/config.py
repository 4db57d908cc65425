"""Settings from one TOML file (immutable, validated) plus secrets from environment variables."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.blocklist import pattern_problem
from generator.protocol import CFG_RANGE, COUNT_RANGE, QUANTIZE_MODES, TEMPERATURE_RANGE


class ConfigError(ValueError):
    """Bad configuration; the message is one line naming the file, the key and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSettings(_Section):
    name: str = ""
    device: str = "auto"
    dtype: str = "auto"
    quantize: str = "none"  # the generator's --quantize: one of QUANTIZE_MODES

    @field_validator("quantize")
    @classmethod
    def _known_mode(cls, quantize: str) -> str:
        if quantize not in QUANTIZE_MODES:  # said here, not minutes later when the generator has started
            raise ValueError(f'"{quantize}" is not a mode; use one of: {", ".join(QUANTIZE_MODES)}')
        return quantize


class GeneratorSettings(_Section):
    max_batch_images: int = Field(default=16, ge=1, le=256)
    start_timeout_s: float = Field(default=600.0, gt=0)
    compile: bool = False


class BotSettings(_Section):
    data_dir: Path = Path("data")
    admins: tuple[str, ...] = ()
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    keep_days: float = Field(default=30.0, ge=0)  # finished jobs' pictures older than this are deleted; 0 keeps
    max_data_gb: float = Field(default=20.0, ge=0)  # the oldest pictures go while they take more; 0: no cap

    @field_validator("admins")
    @classmethod
    def _platform_prefixed(cls, admins: tuple[str, ...]) -> tuple[str, ...]:
        for admin in admins:
            platform, _, user = admin.partition(":")
            if not platform or not user:
                raise ValueError(f'"{admin}" should look like "discord:<user id>" or "slack:<user id>"')
        return admins


class DefaultSettings(_Section):
    count: int = Field(default=4, ge=COUNT_RANGE[0], le=COUNT_RANGE[1])
    cfg: float = Field(default=5.0, ge=CFG_RANGE[0], le=CFG_RANGE[1])
    temperature: float = Field(default=1.0, ge=TEMPERATURE_RANGE[0], le=TEMPERATURE_RANGE[1])


class LimitSettings(_Section):
    jobs_per_period: int = Field(default=10, ge=1)
    period_s: float = Field(default=600.0, gt=0)
    max_queued_per_user: int = Field(default=3, ge=1)
    max_running_per_user: int = Field(default=1, ge=1)
    queue_cap: int = Field(default=100, ge=1)
    server_share: float = Field(default=0.5, gt=0, le=1)  # the share of queue_cap one server's jobs may take


class BlocklistSettings(_Section):
    words: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()

    @field_validator("patterns")
    @classmethod
    def _usable(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:  # else every prompt would be refused for the operator's mistake
            if problem := pattern_problem(pattern):
                raise ValueError(problem)
        return patterns


class ImageSettings(_Section):
    upscale_px: int = Field(default=1024, ge=64, le=4096)
    max_upload_mb: float = Field(default=10.0, gt=0)  # a picture users start from (image prompts)
    max_upload_megapixels: float = Field(default=40.0, gt=0)  # decoded size: a small file can unpack huge


class DescribeSettings(_Section):
    instruction: str = Field(default="Write a prompt for an image generator that would produce this picture.",
                             min_length=1, max_length=1000)
    max_tokens: int = Field(default=64, ge=1, le=512)
    temperature: float = Field(default=0.7, ge=0, le=2)  # 0: greedy, one prompt however many are asked for
    count: int = Field(default=4, ge=1, le=8)  # prompts per picture unless asked otherwise


class QueueSettings(_Section):
    backend: Literal["local", "redis"] = "local"
    redis_url: str = "redis://localhost:6379/0"  # one with a password belongs in JANUS_BOT_REDIS_URL
    prefix: str = Field(default="janus", min_length=1)
    instance: str = Field(default="bot", min_length=1, pattern=r"^[\w.-]+$")  # one per platform/shard
    result_ttl_s: float = Field(default=86400.0, gt=0)
    poll_s: float = Field(default=0.5, gt=0)
    result_dir: str = ""  # a directory the workers share with this bot; empty: results travel through Redis


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class WebSettings(_Section):
    enabled: bool = False  # also serve the page when a chat platform is configured
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8080, ge=0, le=65535)  # 0 picks a free port
    public_names: tuple[str, ...] = ()  # Host names besides the bound host and loopback (a reverse proxy's)
    max_streams_per_client: int = Field(default=32, ge=1)  # open event streams per client address
    max_streams: int = Field(default=512, ge=1)  # open event streams in all
    console_name: str = Field(default="", max_length=64)  # the page's name on this machine; "": the login name

    @field_validator("public_names")
    @classmethod
    def _host_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:  # compared with the Host header's name, which has no scheme, port or path
            if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", name):
                raise ValueError(f'"{name}" should be a host name such as "bot.example.com", with no scheme or port')
        return tuple(name.lower() for name in names)

    @property
    def public(self) -> bool:
        """Serving more than this machine (another bind or names of a proxy), so the API needs the access token."""
        return self.host not in LOOPBACK_HOSTS or bool(self.public_names)


class DiscordSettings(_Section):
    edit_every_s: float = Field(default=1.5, ge=0)
    sync_commands: bool = True
    guild_ids: tuple[int, ...] = ()  # sync the commands to these servers only (none: globally)


class SlackSettings(_Section):
    mode: Literal["auto", "socket", "http"] = "auto"  # auto: Socket Mode with an app token, else HTTP
    host: str = Field(default="0.0.0.0", min_length=1)  # HTTP mode only
    port: int = Field(default=3000, ge=0, le=65535)  # 0 picks a free port
    path: str = Field(default="/slack/events", pattern=r"^/")
    api_url: str = ""  # the Web API's base URL; empty is https://slack.com/api/
    update_interval_s: float = Field(default=2.0, ge=0)
    preview_interval_s: float = Field(default=5.0, ge=0)


class Secrets(_Section):
    discord_token: str | None = None
    slack_bot_token: str | None = None
    slack_app_token: str | None = None
    slack_signing_secret: str | None = None
    web_token: str | None = None
    web_admin_token: str | None = None
    redis_url: str | None = None  # with its password: overrides [queue] redis_url

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Secrets:
        """Secrets from DISCORD_TOKEN, SLACK_BOT_TOKEN, ... (or JANUS_BOT_-prefixed); empty ones count as unset."""
        return cls(**{
            name: env.get(name.upper()) or env.get(f"JANUS_BOT_{name.upper()}") or None for name in cls.model_fields
        })


class Settings(_Section):
    model: ModelSettings = ModelSettings()
    generator: GeneratorSettings = GeneratorSettings()
    bot: BotSettings = BotSettings()
    defaults: DefaultSettings = DefaultSettings()
    limits: LimitSettings = LimitSettings()
    blocklist: BlocklistSettings = BlocklistSettings()
    images: ImageSettings = ImageSettings()
    describe: DescribeSettings = DescribeSettings()
    queue: QueueSettings = QueueSettings()
    web: WebSettings = WebSettings()
    discord: DiscordSettings = DiscordSettings()
    slack: SlackSettings = SlackSettings()
    secrets: Secrets = Field(default=Secrets(), exclude=True)

    @property
    def database(self) -> Path:
        """The SQLite file under the data directory."""
        return self.bot.data_dir / "janus-bot.db"


def _one_line(source: str, error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key (config.example.toml lists every key)"
    return f"{source}: {key}: {message}"


def load_settings(path: Path | None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the TOML file at `path` (defaults when None) and secrets from `env`."""
    env = os.environ if env is None else env
    data: dict[str, object] = {}
    source = str(path) if path else "defaults"
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file (copy config.example.toml to start)") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: cannot read: {error}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from None
    if "secrets" in data:
        raise ConfigError(f"{source}: secrets: keep tokens out of the file; set them in the environment")
    try:
        settings = Settings.model_validate(data)
        return settings.model_copy(update={"secrets": Secrets.from_env(env)})
    except ValidationError as error:
        raise ConfigError(_one_line(source, error)) from None
