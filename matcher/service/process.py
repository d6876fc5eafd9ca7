"""Running ``icd serve`` as a child process (tests, benchmarks): pick a free port, start it, wait until
``/health`` answers, stop it (SIGTERM, then SIGKILL) or kill it outright."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Self

from matcher.service import TOKEN_ENV
from matcher.service.client import ServiceClient

__all__ = ["ServerProcess", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the system's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m matcher.cli serve --index DIR`` in a child process. The token travels in the environment
    (never on the command line); ``args`` are more ``icd serve`` options; output goes to ``log`` (a file path)
    or is dropped."""

    def __init__(self, index_dir: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int | None = None,
                 token: str | None = None, args: Sequence[str] = (), env: dict[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None, log: str | os.PathLike[str] | None = None) -> None:
        self.index_dir = Path(index_dir)
        self.host = host
        self.port = port or free_port(host)
        self.token = token
        self.args = list(args)
        self.env = env
        self.cwd = cwd
        self.log = Path(log) if log is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_fh: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def client(self, token: str | None | bool = True) -> ServiceClient:
        """A client of this server (with its token unless ``token`` is None/False or another string)."""
        return ServiceClient(self.url, self.token if token is True else (token or None))

    def log_text(self) -> str:
        """What the server printed so far (empty without a log file)."""
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log and self.log.exists() else ""

    def start(self, timeout: float = 180.0) -> Self:
        """Start the server and wait until ``/health`` answers 200; RuntimeError (with its output) when it exits
        first or does not answer within ``timeout`` seconds."""
        env = dict(os.environ if self.env is None else self.env)
        env.pop(TOKEN_ENV, None)
        if self.token:
            env[TOKEN_ENV] = self.token
        cmd = [sys.executable, "-m", "matcher.cli", "serve", "--index", str(self.index_dir), "--host", self.host,
               "--port", str(self.port), *self.args]
        self._log_fh = open(self.log, "ab") if self.log is not None else None  # noqa: SIM115 - closed in stop()
        out = self._log_fh if self._log_fh is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        health = self.client(token=None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._close_log()
                raise RuntimeError(f"icd serve exited with code {self.proc.returncode}:\n{self.log_text()}")
            try:
                if health.health().status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"icd serve did not answer /health within {timeout:.0f} s:\n{self.log_text()}")

    def kill(self) -> None:
        """SIGKILL the server (no shutdown of any kind) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        self._close_log()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (uvicorn shuts down, the index is closed), SIGKILL after ``timeout`` s; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()
        return self.proc.returncode

    def _close_log(self) -> None:
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def __enter__(self) -> Self:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
