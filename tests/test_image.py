"""The container image and docker-compose.yml. The image (its CPU variant, on a Debian base made here) is built
with buildah and its command run as `docker run` runs it: /healthz, the health check and one /imagine through the
HTTP API. The compose file's promises are checked by reading it with janus-bot's own argument parsers."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.buildah import Buildah, require_tools

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/janus-bot:test"
BASE = "localhost/janus-test-base:bookworm"
TOKEN = "image-test-token"
PASSWORD = "0123456789abcdef"


# -- docker-compose.yml and the Dockerfile, read --


def interpolated(text: str, env: Mapping[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error} substituted from `env`, and $$ as $."""

    def value(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if kind == "?":
            raise KeyError(f"{name}: {rest}")
        return rest or ""

    return re.sub(r"\$\{(\w+)(?::([-?])([^}]*))?\}", value, text).replace("$$", "$")


def compose(env: Mapping[str, str]) -> dict[str, Any]:
    return yaml.safe_load(interpolated((ROOT / "docker-compose.yml").read_text(), env))


def dockerfile() -> str:
    """The Dockerfile with its continuation lines joined, as the builder reads it."""
    return (ROOT / "Dockerfile").read_text().replace("\\\n", "")


def exec_form(instruction: str) -> list[str]:
    """The JSON array of the Dockerfile's last `instruction` (CMD, ENTRYPOINT)."""
    return json.loads(re.findall(rf"^{instruction} (\[.*\])$", dockerfile(), re.MULTILINE)[-1])


SECRETS = {"JANUS_BOT_WEB_TOKEN": TOKEN, "JANUS_BOT_REDIS_PASSWORD": PASSWORD}


def janus_services(services: dict[str, Any]) -> dict[str, Any]:
    return {name: service for name, service in services.items() if name != "redis"}


def test_compose_builds_one_image_and_runs_it_as_the_bot_and_the_workers() -> None:
    services = compose(SECRETS)["services"]
    ours = janus_services(services)
    assert {"bot", "worker-0", "worker-1"} <= set(ours)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert {service["image"] for service in ours.values()} == {f"janus-bot:{version}"}
    assert [name for name, service in services.items() if "build" in service] == ["bot"]
    assert services["bot"]["pull_policy"] == "build"  # never pulled: a registry's "janus-bot" is not this one
    assert {services[f"worker-{n}"]["pull_policy"] for n in (0, 1)} == {"never"}
    with pytest.raises(KeyError, match="JANUS_BOT_REDIS_PASSWORD"):
        compose({"JANUS_BOT_WEB_TOKEN": TOKEN})  # compose refuses to start without it, as without the web token


def test_compose_pins_its_images_and_the_dockerfile_its_base() -> None:
    redis = compose(SECRETS)["services"]["redis"]["image"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-\w+", redis), redis
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile(), re.MULTILINE)
    assert base and re.fullmatch(r"nvidia/cuda:[\w.-]+@sha256:[0-9a-f]{64}", base.group(1)), base


def test_compose_gives_redis_a_password_the_bots_and_workers_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.app import _with_flags, add_arguments
    from bot.config import load_settings
    from bot.worker import add_arguments as worker_arguments

    services = compose(SECRETS)["services"]
    command = services["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == PASSWORD
    url = f"redis://:{PASSWORD}@redis:6379/0"
    for name, service in janus_services(services).items():
        assert service["environment"]["JANUS_BOT_REDIS_URL"] == url, name
        assert not any(PASSWORD in arg for arg in service["command"]), name  # `ps` and `docker inspect` show those
        env = {key: str(value) for key, value in service["environment"].items()}
        if service["command"][0] == "run":  # `janus-bot run` as the bot service gives it
            parser = argparse.ArgumentParser()
            add_arguments(parser)
            args = parser.parse_args(service["command"][1:])
            settings = _with_flags(load_settings(None, env), args)
            assert settings.queue.backend == "redis" and settings.secrets.redis_url == url, name
        else:  # `janus-bot worker`: --redis defaults to the environment's URL, read when the parser is made
            assert service["command"][0] == "worker", name
            monkeypatch.delenv("REDIS_URL", raising=False)  # it would come first
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            parser = argparse.ArgumentParser()
            worker_arguments(parser)
            assert parser.parse_args(service["command"][1:]).redis == url, name


def test_compose_mounts_settings_where_the_command_reads_them() -> None:
    bot = compose(SECRETS)["services"]["bot"]
    command = bot["command"]
    config = command[command.index("--config") + 1]
    assert exec_form("CMD") == ["run", "--config", config]  # the image's own command reads the same file
    text = (ROOT / "docker-compose.yml").read_text()
    mounts = re.findall(r"^ *# - \./config\.toml:(\S+):ro$", text, re.MULTILINE)
    assert mounts == [config]
    assert "/srv" not in text


def test_compose_reaches_slack_http_mode_when_asked() -> None:
    from bot.config import SlackSettings

    bot = compose(SECRETS | {"SLACK_SIGNING_SECRET": "s3cret"})["services"]["bot"]
    assert bot["environment"]["SLACK_SIGNING_SECRET"] == "s3cret"
    port = SlackSettings().port  # the image's config leaves [slack] to its defaults
    assert f"127.0.0.1:{port}:{port}" in bot["ports"]  # loopback by default: Slack reaches it through a proxy
    bot = compose(SECRETS | {"SLACK_HTTP_PORT": "10.0.0.2:3001"})["services"]["bot"]
    assert f"10.0.0.2:3001:{port}" in bot["ports"]


def test_the_dockerfile_chooses_torch_as_scripts_install_does() -> None:
    """The image's torch build comes from scripts/torch_choice.py: the version and index it knows."""
    code = re.search(r"python3 -c '([^']*)' \"\$TORCH\"", dockerfile())
    assert code, "the Dockerfile's torch choice moved"

    def choose(build: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code.group(1), build], cwd=ROOT / "scripts", capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import torch_choice
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    index = torch_choice.INDEX
    version = torch_choice.TORCH
    assert choose("cpu").stdout.split() == [f"torch=={version}+cpu", "--extra-index-url", f"{index}/cpu"]
    default = re.search(r"^ARG TORCH=(\w+)$", dockerfile(), re.MULTILINE)
    assert default and default.group(1) in {build for _, build in torch_choice.CUDA_BUILDS}
    for _, build in torch_choice.CUDA_BUILDS:
        assert choose(build).stdout.split() == [f"torch=={version}+{build}", "--extra-index-url", f"{index}/{build}"]
    wrong = choose("cu99")
    assert wrong.returncode != 0 and "TORCH=cu99: give cpu or one of" in wrong.stderr


# -- the image, built and run --


def host_pip(key: str) -> list[str]:
    """This machine's pip setting `key` (cert, find-links): its environment's, else its config files'."""
    value = os.environ.get(f"PIP_{key.upper().replace('-', '_')}")
    if value is None:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                timeout=60).stdout  # fmt: skip
        found = re.findall(rf"^[\w:]*\.{key}='(.*)'$", listed, re.MULTILINE)
        value = found[0] if found else ""
    return value.split()


@pytest.fixture(scope="module")
def buildah(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Buildah]:
    require_tools()
    store = Buildah(tmp_path_factory.mktemp("buildah"))
    yield store
    store.remove()  # some GB


@pytest.fixture(scope="module")
def image(buildah: Buildah) -> str:
    """The CPU image on a Debian bookworm base, with pip's CA bundle and local wheels of this machine mounted."""
    buildah.debian_base(BASE)
    args = {"BASE_IMAGE": BASE, "TORCH": "cpu"}
    volumes = []
    cert = next((path for path in [*host_pip("cert"), "/etc/ssl/certs/ca-certificates.crt"] if Path(path).is_file()),
                None)  # fmt: skip
    if cert:  # as behind a TLS-inspecting proxy (which this machine's pip may well be)
        volumes.append(f"{cert}:/run/pip-cert.pem:ro")
        args["PIP_CERT"] = "/run/pip-cert.pem"
    wheels = [path for path in host_pip("find-links") if Path(path).is_dir()]  # the CPU torch wheel, if here
    volumes += [f"{path}:/run/wheels/{n}:ro" for n, path in enumerate(wheels)]
    if wheels:
        args["PIP_FIND_LINKS"] = " ".join(f"/run/wheels/{n}" for n in range(len(wheels)))
    buildah.build(ROOT, IMAGE, buildah.directory / "build.log", args=args, volumes=volumes)
    return IMAGE


@pytest.mark.image
@pytest.mark.slow
def test_the_build_context_is_what_the_image_needs(buildah: Buildah) -> None:
    containerfile = buildah.directory / "Containerfile.context"
    containerfile.write_text("FROM scratch\nCOPY . /context/\n")
    buildah.build(ROOT, "localhost/context:test", buildah.directory / "context.log", containerfile=containerfile)
    context = buildah.files(buildah.container("localhost/context:test")) / "context"
    sent = {path.relative_to(context).as_posix() for path in context.rglob("*") if path.is_file()}
    needed = ["pyproject.toml", "README.md", "requirements.txt", "scripts/torch_choice.py", "bot/app.py",
              "bot/adapters/web/static/index.html", "generator/demo_model/model.safetensors", "janus_bot/cli.py"]
    assert set(needed) <= sent
    tops = {path.split("/")[0] for path in sent}
    assert tops == {"pyproject.toml", "README.md", "requirements.txt", "scripts", "bot", "generator", "janus_bot"}
    assert not [path for path in sent if "__pycache__" in path or path.endswith(".pyc")]
    size = sum((context / path).stat().st_size for path in sent)
    assert size < 50 * 2**20, f"{size / 2**20:.0f} MiB of build context"


def _descendants(pid: int) -> list[int]:
    """The processes below `pid`, parents before children."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = sorted(children.get(todo.pop(0), []))
        found += below
        todo += below
    return found


def _read(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
    except OSError:
        return []


def _request(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> tuple[int, Any, bytes]:
    """GET `url`, or POST `body` as JSON; the status, headers and body, errors included."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.mark.image
@pytest.mark.slow
def test_the_cpu_image_serves_health_and_imagine_on_the_builtin_model(buildah: Buildah, image: str) -> None:
    config = buildah.config(image)
    assert config["User"] == "janus" and config["WorkingDir"] == "/srv"
    assert set(config["Volumes"]) == {"/data", "/cache"} and "8080/tcp" in config["ExposedPorts"]
    check = config["Healthcheck"]["Test"]
    assert check[0] == "CMD" and "http://127.0.0.1:8080/healthz" in check[-1]
    container = buildah.container(image)
    site = next(buildah.files(container).glob("opt/venv/lib/python3*/site-packages"))
    assert "+cpu" in (site / "torch" / "version.py").read_text()  # TORCH=cpu took the CPU build
    assert not [name for name in ("pytest", "playwright", "mypy", "ruff") if (site / name).exists()]  # test tools
    # The image's own command, as `docker run IMAGE` runs it; the port is any free one, not 8080, because the
    # container shares this machine's network with whatever else runs here.
    command = [*config["Entrypoint"], *config["Cmd"], "--web-port", "0"]
    proc = subprocess.Popen(buildah.run_command(container, command, {"JANUS_BOT_WEB_TOKEN": TOKEN}),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    seen: list[str] = []
    threading.Thread(target=_read, args=(proc.stdout, seen), daemon=True).start()
    try:
        deadline = time.monotonic() + 300
        port = None
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            banner = [m.group(1) for line in list(seen) if (m := re.match(r"  web: http://0\.0\.0\.0:(\d+)/", line))]
            port = banner[0] if banner else None
        assert port, "".join(seen[-40:])
        assert "janus-bot is running: " in "".join(seen) and " on cpu" in "".join(seen)
        url = f"http://127.0.0.1:{port}"

        status, _, body = _request(f"{url}/healthz")
        health = json.loads(body)
        assert status == 200 and health["model_loaded"] and health["device"] == "cpu", health
        # The image's HEALTHCHECK, run in the container beside the bot (on the port it took).
        probe_command = [arg.replace(":8080/", f":{port}/") for arg in check[1:]]
        probe = subprocess.run(buildah.run_command(container, probe_command), capture_output=True, text=True,
                               timeout=120)  # fmt: skip
        assert probe.returncode == 0, probe.stderr

        job = {"user": "image-test", "prompt": "a red circle on a blue background", "count": 2, "seed": 7}
        status, _, body = _request(f"{url}/api/imagine", job)
        assert status == 401, body  # bound to every interface: the API needs the token
        status, _, body = _request(f"{url}/api/imagine", job, TOKEN)
        assert status == 202, body
        job_url = f"{url}{json.loads(body)['url']}"
        deadline = time.monotonic() + 300
        while True:
            status, _, body = _request(job_url, token=TOKEN)
            done = json.loads(body)
            if done["status"] in ("done", "failed", "cancelled") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert done["status"] == "done" and done["seed"] == "7" and len(done["image_urls"]) == 2, done
        status, headers, grid = _request(f"{url}{done['grid_url']}", token=TOKEN)
        assert status == 200 and headers["Content-Type"] == "image/png" and grid.startswith(b"\x89PNG\r\n\x1a\n")

        # `docker stop`: SIGTERM to the container's command, which finishes and exits 0.
        main = [pid for pid in _descendants(proc.pid) if not Path(_cmdline(pid)[0]).name.startswith("buildah")
                and any(arg.endswith("/janus-bot") for arg in _cmdline(pid)[1:])]  # fmt: skip
        assert main, "the container's janus-bot process is not below buildah's"
        os.kill(main[0], signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, "".join(seen[-40:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
