"""A TCP forwarder that a test can pull out from under a client, to make a server vanish.

    with TcpProxy(("127.0.0.1", 5432)) as proxy:   # proxy.port: where clients connect
        ...                                        # traffic flows to the target
        proxy.stop()                               # listener closed, live connections cut
        ...                                        # clients see the server gone
        proxy.start()                              # same port again: the server is back

It runs an asyncio loop in a thread of the test process; nothing of the target is touched, so a
shared server (PostgreSQL, Redis) can "go down" for one client while every other client keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any


class TcpProxy:
    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = target
        self.host = host
        self.port = port
        self.connections = 0  # accepted since creation
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._live: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen (on the port of the first start, once there was one) and forward."""
        self._call(self._start())

    def stop(self) -> None:
        """Stop listening and cut every live connection, both sides, at once."""
        self._call(self._stop())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self.stop()
        self._call(self._cancel_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=15)

    async def _start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._live):
            writer.transport.abort()
        self._live.clear()
        if server is not None:
            await server.wait_closed()

    async def _cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            if self._server is None:  # stopped while connecting
                writer.transport.abort()
                up_writer.transport.abort()
                return
            self._live.update((writer, up_writer))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            self._live.difference_update((writer, up_writer))
        finally:
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction until EOF or an error; then the other side is closed too."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.transport.abort()
