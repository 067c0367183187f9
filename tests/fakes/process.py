"""A server run as a real subprocess for the length of a test: started, awaited, stopped.

The server prints one line ``READY <url>`` once it listens; everything before that line on stdout
is kept (the gateway prints its first API key there). Stderr goes to a file, so a chatty server
never blocks on a full pipe, and is shown when start-up fails.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import tempfile
import threading
from typing import Any


class ServerProcess:
    name = "server"

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.url = ""
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self.banner: list[str] = []
        self._stderr: Any = None
        self._stderr_text = ""

    def command(self) -> list[str]:
        raise NotImplementedError

    def cwd(self) -> str | None:
        return None

    def environment(self) -> dict[str, str] | None:
        return None

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=self.cwd(),
            env=self.environment(),
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.process.stdout, lines), daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=self.timeout)
            except queue.Empty:
                line = ""
            if line.startswith("READY ") or not line:
                break
            self.banner.append(line)
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"{self.name} did not start; stderr:\n{self.stderr()}")
        self.url = line.split()[1].removesuffix("/v1")
        self.port = int(self.url.rsplit(":", 1)[1])

    @staticmethod
    def _pump(stream: Any, lines: queue.Queue[str]) -> None:
        with stream:
            for line in stream:
                lines.put(line.rstrip("\n") or " ")
        lines.put("")  # EOF: the process has exited

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stderr(self) -> str:
        """Everything the server wrote to stderr so far."""
        if self._stderr is None or self._stderr.closed:
            return self._stderr_text
        fd = self._stderr.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._stderr is not None and not self._stderr.closed:
            self._stderr_text = self.stderr()
            self._stderr.close()
