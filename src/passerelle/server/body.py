"""Reading a request body: the content encodings the gateway accepts, and clear 400s for the rest.

aiohttp inflates ``gzip`` and ``deflate`` bodies itself, a bounded piece at a time, and stops at
``server.max_body_bytes`` of inflated bytes (a 413), so a zip bomb costs one chunk of memory. A
body that claims an encoding it does not have, or an encoding the gateway does not decode
(``compress``, or anything unknown, which aiohttp would pass through undecoded), is the client's
error: a 400 in OpenAI's shape, never a 500. (``br`` and ``zstd`` without their decoders
installed are refused by aiohttp's parser before a handler runs.)
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from passerelle.errors import InvalidRequestError

ACCEPTED_ENCODINGS = frozenset({"", "identity", "gzip", "deflate"})


async def read_body(request: web.Request) -> bytes:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ACCEPTED_ENCODINGS:
        raise InvalidRequestError(
            "Content-Encoding must be gzip, deflate or identity",
            code="unsupported_content_encoding",
        )
    try:
        return await request.read()
    except (
        HttpProcessingError,
        RequestPayloadError,
    ):  # the body is not what its Content-Encoding says
        # what is left of the body cannot be decoded either: aiohttp must not try to drain it
        # (it would log the same error again, with a traceback), and the connection closes
        request.content.feed_eof()
        if encoding in ("", "identity"):  # the framing itself (chunk sizes) is broken
            raise InvalidRequestError(
                "the request body cannot be read as sent (its framing is invalid)",
                code="malformed_http_request",
                headers={"Connection": "close"},
            ) from None
        raise InvalidRequestError(
            f"the request body is not valid {encoding} data",
            code="invalid_content_encoding",
            headers={"Connection": "close"},
        ) from None
