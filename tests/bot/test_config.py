from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, load_settings

EXAMPLE = Path(__file__).parents[2] / "config.example.toml"


def test_the_example_documents_every_key_with_its_default() -> None:
    example = tomllib.loads(EXAMPLE.read_text())
    defaults = Settings().model_dump(mode="json")
    assert example == defaults  # every section and key, nothing more, with the default value
    assert load_settings(EXAMPLE, {}) == Settings()


def test_no_file_means_defaults_and_settings_are_immutable() -> None:
    settings = load_settings(None, {})
    assert settings.limits.queue_cap == 100 and settings.database == Path("data/janus-bot.db")
    with pytest.raises(ValueError):
        settings.limits.queue_cap = 5  # type: ignore[misc]


def test_secrets_come_from_the_environment_only(tmp_path: Path) -> None:
    env = {"DISCORD_TOKEN": "abc", "SLACK_BOT_TOKEN": "", "JANUS_BOT_SLACK_APP_TOKEN": "xapp"}
    settings = load_settings(None, env)
    assert settings.secrets.discord_token == "abc" and settings.secrets.slack_bot_token is None
    assert settings.secrets.slack_app_token == "xapp"
    assert "abc" not in settings.model_dump_json() and "abc" not in repr(settings.model_dump())
    path = tmp_path / "config.toml"
    path.write_text('[secrets]\ndiscord_token = "abc"\n')
    with pytest.raises(ConfigError, match="secrets: keep tokens out of the file; set them in the environment"):
        load_settings(path, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[limits]\nqueue_cap = 0\n", "config.toml: limits.queue_cap: Input should be greater than or equal to 1"),
        ("[limits]\nqueue_kap = 5\n", "config.toml: limits.queue_kap: unknown key (config.example.toml lists every"),
        ("[defaults]\ncount = 17\n", "config.toml: defaults.count: Input should be less than or equal to 16"),
        ('[bot]\nadmins = ["1234"]\n', 'config.toml: bot.admins: "1234" should look like "discord:<user id>"'),
        ("[limits\n", "config.toml: not valid TOML: "),
        ('[model]\nquantize = "int3"\n',
         'config.toml: model.quantize: "int3" is not a mode; use one of: none, int8, int4'),
        ('[blocklist]\npatterns = ["fine", "(oops"]\n',
         "config.toml: blocklist.patterns: '(oops' is not a regular expression the blocklist can use (missing ): "
         "(oops"),
        ('[blocklist]\npatterns = ["bad|"]\n',
         "config.toml: blocklist.patterns: 'bad|' matches an empty text, so it would block every prompt"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    assert str(info.value).startswith(str(tmp_path / message)) and "\n" not in str(info.value)


def test_a_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file \\(copy config.example.toml to start\\)"):
        load_settings(tmp_path / "nope.toml", {})


def test_generator_settings_reach_the_generator_command_line(tmp_path: Path) -> None:
    from bot.app import generator_process

    path = tmp_path / "config.toml"
    path.write_text("[generator]\nmax_batch_images = 8\ncompile = true\n")
    command = generator_process(load_settings(path, {})).command
    assert command[command.index("--max-batch-images") + 1] == "8" and "--compile" in command
    assert "--compile" not in generator_process(load_settings(None, {})).command


def test_model_quantize_reaches_the_generator_and_the_worker_command_lines(tmp_path: Path) -> None:
    from bot import app
    from bot.app import generator_process
    from bot.generator_client import GeneratorProcess
    from bot.worker import add_arguments
    from generator.cli import Parser

    path = tmp_path / "config.toml"
    path.write_text('[model]\nquantize = "int8"\n')
    command = generator_process(load_settings(path, {})).command
    assert command[command.index("--quantize") + 1] == "int8"
    assert "--quantize" not in generator_process(load_settings(None, {})).command  # none: the generator's default
    parser = Parser(prog="janus-bot worker")
    add_arguments(parser)
    args = parser.parse_args(["--redis", "redis://localhost", "--quantize", "int4"])
    command = GeneratorProcess(args.model, quantize=args.quantize).command
    assert command[command.index("--quantize") + 1] == "int4"
    run = Parser(prog="janus-bot run")
    app.add_arguments(run)
    flagged = app._with_flags(load_settings(path, {}), run.parse_args(["--quantize", "int4", "--model", "m"]))
    command = generator_process(flagged).command  # the flag over the file's int8
    assert command[command.index("--quantize") + 1] == "int4" and command[command.index("--model") + 1] == "m"
    assert app._with_flags(load_settings(path, {}), run.parse_args([])).model.quantize == "int8"
