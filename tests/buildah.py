"""Container images for tests, built and run with Debian's buildah the way these machines allow: its own store
in a temporary directory (vfs), chroot isolation, the host's network. No registry is reachable, so base images
are made here with mmdebstrap."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

RUN = ["--isolation", "chroot", "--network", "host"]


def require_tools() -> None:
    """Skip (fail on CI, where scripts/test installs them) without buildah, mmdebstrap or root."""
    missing = [tool for tool in ("buildah", "mmdebstrap") if shutil.which(tool) is None]
    why = f"{' and '.join(missing)} not installed (scripts/test installs them)" if missing else None
    if why is None and os.geteuid() != 0:
        why = "buildah's vfs store and chroot isolation and mmdebstrap's root mode need root"
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


class Buildah:
    """buildah with its images and containers under `directory`, apart from any other user of the machine."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.command = ["buildah", "--root", str(directory / "storage"), "--runroot", str(directory / "run"),
                        "--storage-driver", "vfs"]  # fmt: skip

    def __call__(self, *args: str, timeout: float = 300) -> str:
        """Run `buildah ARGS`; its output, or a failure with its error output."""
        done = subprocess.run([*self.command, *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            pytest.fail(f"buildah {' '.join(args[:2])} exited with {done.returncode}: {done.stderr[-3000:]}")
        return done.stdout.strip()

    def debian_base(self, tag: str, suite: str = "bookworm") -> None:
        """A Debian base image (minbase, without documentation, as the slim images) named `tag`."""
        tarball = self.directory / f"{suite}.tar"
        excluded = [f"--dpkgopt=path-exclude=/usr/share/{path}/*" for path in ("doc", "man", "info", "locale")]
        done = subprocess.run(["mmdebstrap", "--variant=minbase", "--quiet", *excluded,
                               "--dpkgopt=path-include=/usr/share/locale/locale.alias", suite, str(tarball)],
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"mmdebstrap {suite} exited with {done.returncode}: {done.stderr[-3000:]}")
        container = self("from", "scratch")
        self("add", container, str(tarball), "/")
        self("config", "--cmd", "/bin/bash", container)
        self("commit", "--quiet", "--rm", container, tag)
        tarball.unlink()

    def build(self, context: Path, tag: str, log: Path, *, containerfile: Path | None = None,
              args: Mapping[str, str] = {}, volumes: Sequence[str] = (), timeout: float = 1800) -> None:  # noqa: B006
        """Build `context` (its Dockerfile, or `containerfile`) into `tag`, in Docker's format (which keeps
        HEALTHCHECK) and as one layer; the output goes to `log`."""
        command = [*self.command, "build", "--pull=never", "--format", "docker", "--layers=false", *RUN, "--tag", tag]
        command += [f"--build-arg={name}={value}" for name, value in args.items()]
        command += [f"--volume={volume}" for volume in volumes]
        command += ["--file", str(containerfile)] if containerfile else []
        with log.open("w") as out:
            done = subprocess.run([*command, str(context)], stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        if done.returncode != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
            pytest.fail(f"buildah build exited with {done.returncode}; the end of {log}:\n{tail}")

    def config(self, image: str) -> dict[str, Any]:
        """The image's Docker config: User, Entrypoint, Cmd, Healthcheck, ExposedPorts, Volumes, ..."""
        return json.loads(self("inspect", "--type", "image", image))["Docker"]["config"]

    def container(self, image: str) -> str:
        """A new working container of `image`."""
        return self("from", "--quiet", "--pull=never", image)

    def files(self, container: str) -> Path:
        """The container's root file system, on this machine."""
        return Path(self("mount", container))

    def run_command(self, container: str, command: Sequence[str], env: Mapping[str, str] = {}) -> list[str]:  # noqa: B006
        """The command line that runs `command` in `container` as the image says (user, working directory)."""
        return [*self.command, "run", *RUN, *(f"--env={name}={value}" for name, value in env.items()), container,
                "--", *command]  # fmt: skip

    def remove(self) -> None:
        """Remove every container and image, then the store."""
        for args in (["rm", "--all"], ["rmi", "--all", "--force"]):
            subprocess.run([*self.command, *args], capture_output=True, timeout=300)
        shutil.rmtree(self.directory, ignore_errors=True)
