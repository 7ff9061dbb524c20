"""uvicorn's httptools protocol with a deadline and a size bound on request heads (request line and headers).

uvicorn reads request heads without a time limit and, with httptools, without a size limit: a client could hold a
connection open by trickling a head, or send a 20 MB header. Here a head must be complete within
``HEAD_TIMEOUT_S`` seconds of the connection opening or of its first byte (408 and close otherwise), and within
``MAX_HEAD_BYTES`` bytes (431 and close). Bodies are bounded by the ASGI guard (``service/guard.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from coact_verl.oracle.service.settings import SETTINGS_ENV

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def _from_env(name: str, default: float) -> float:
    raw = os.environ.get(SETTINGS_ENV)
    if raw:
        try:
            return float(json.loads(raw).get(name, default))
        except (ValueError, TypeError):
            return default
    return default


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` whose request heads have a deadline and a size bound (set before serving)."""

    HEAD_TIMEOUT_S = _from_env("head_timeout_s", 10.0)
    MAX_HEAD_BYTES = int(_from_env("max_header_bytes", 64 * 1024))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def _start_head(self) -> None:
        if self._head_timer is None:
            self._head_bytes = 0
            self._head_timer = self.loop.call_later(self.HEAD_TIMEOUT_S, self._refuse, 408)

    def _end_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        body = b"request head too slow" if status == 408 else b"request head too large"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        in_head = self._head_timer is not None
        super().data_received(data)
        if in_head and self._head_timer is not None:  # the head is still incomplete after this chunk
            self._head_bytes += len(data)
            if self._head_bytes > self.MAX_HEAD_BYTES:
                self._end_head()
                self._refuse(431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_head()

    def on_headers_complete(self) -> None:
        self._end_head()
        super().on_headers_complete()


__all__ = ["GuardedHttpToolsProtocol"]
