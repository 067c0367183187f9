"""The reference the overhead benchmark compares Passerelle with: a minimal pass-through proxy.

An aiohttp server on uvloop with ONE pooled ``aiohttp.ClientSession``. ``POST /v1/chat/completions``
bodies go to the upstream untouched and its bytes come back untouched: no parsing, no auth, no
accounting. An upstream answer of type ``text/event-stream`` is relayed as it arrives. This is
about the least CPU a Python proxy can spend per request (about 0.15 ms on the 2-core machine the
benchmark was written on), so "CPU per request / the reference's" is the price of what the gateway
does on top of moving bytes.

    python bench/reference_proxy.py --upstream http://127.0.0.1:PORT --port 0
    -> prints "READY http://127.0.0.1:<port>/v1" once listening
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

PASSED_HEADERS = ("Content-Type",)
UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", ClientSession)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {h: request.headers[h] for h in PASSED_HEADERS if h in request.headers}
    async with request.app[SESSION].post(
        request.app[UPSTREAM] + "/v1/chat/completions", data=body, headers=headers
    ) as upstream:
        content_type = upstream.headers.get("Content-Type", "application/json")
        if not content_type.startswith("text/event-stream"):
            return web.Response(
                body=await upstream.read(),
                status=upstream.status,
                headers={"Content-Type": content_type},
            )
        response = web.StreamResponse(
            status=upstream.status,
            headers={"Content-Type": content_type, "Cache-Control": "no-cache"},
        )
        await response.prepare(request)
        async for data in upstream.content.iter_any():
            await response.write(data)
        await response.write_eof()
        return response


async def serve(upstream: str, host: str, port: int) -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[UPSTREAM] = upstream.rstrip("/").removesuffix("/v1")

    async def session(app: web.Application):  # type: ignore[no-untyped-def]
        app[SESSION] = ClientSession(
            connector=TCPConnector(limit=1000),
            timeout=ClientTimeout(total=60),
            skip_auto_headers=("User-Agent",),
        )
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session)
    app.router.add_post("/v1/chat/completions", chat_completions)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    await web.SockSite(runner, sock, backlog=4096).start()
    print(f"READY http://{host}:{sock.getsockname()[1]}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Minimal aiohttp pass-through proxy (reference).")
    parser.add_argument("--upstream", required=True, help="upstream base URL (with or without /v1)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the gateway
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.upstream, args.host, args.port))


if __name__ == "__main__":
    main()
