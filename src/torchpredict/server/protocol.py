"""uvicorn's httptools protocol with a deadline on a request's headers: a slow client is cut off, not waited for.

uvicorn closes a connection that stays idle between requests (its keep-alive timeout), but once a client has
sent one byte it waits for the rest of the headers forever: a slowloris client trickling a header line every few
seconds holds its connection (and, by the hundreds, the server's sockets) as long as it likes. Here the headers
of each request must be complete within `read_timeout_s` of the connection being made or of the previous
answer; past it the client gets a 408 with a JSON error and the connection is closed. The body has the same
deadline, counted from the headers, in the app (App.body), where the request is known.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["TimedHttpToolsProtocol"]


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol, plus the header deadline (a class attribute: uvicorn builds one protocol per connection
    from the class it is given, also in worker processes, where `run.worker_app` sets it before any connection)."""

    read_timeout_s: float = 30.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:  # a pipelined request has its headers
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.read_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        body = orjson.dumps({"error": f"the request's headers did not arrive within {self.read_timeout_s:g} s "
                                      "(the server's --read-timeout-s)"})
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()
