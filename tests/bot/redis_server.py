"""A real redis-server for tests: a random local port, a temporary directory, append-only persistence."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.bot.helpers import free_port


class RedisServer:
    """`redis-server` on 127.0.0.1:`port` with its files in `directory`; started, killed and restarted by tests."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI"):  # CI installs it (scripts/test): missing there is a failure, not a skip
                pytest.fail("redis-server is not installed; scripts/test should have installed it")
            pytest.skip("redis-server is not installed (scripts/test installs it)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its URL, with the password when it has one."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again, on the same port and files) and wait until it answers."""
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no",
             *(["--requirepass", self.password] if self.password else [])],
            stdout=(self.directory / "redis.log").open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.directory / 'redis.log').read_text()[-500:]}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer within 10 s")

    def kill(self) -> None:
        """kill -9: what was acknowledged is on disk (appendfsync always), nothing else survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """Stop it for good."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
