"""uvicorn's HTTP protocols (httptools and h11) with a deadline and a size bound on request heads (request line and
headers).

uvicorn reads request heads without a time limit and, with httptools, without a size limit: a client could hold a
connection open by trickling a head, or send a 20 MB header. Here a head must be complete within
``HEAD_TIMEOUT_S`` seconds of the connection opening or of its first byte (408 and close otherwise), and within
``MAX_HEAD_BYTES`` bytes (431 and close). Bodies are bounded by the ASGI guard (``service/guard.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
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


if TYPE_CHECKING:
    # Type checkers see the mixin's ``super()`` calls resolve to the asyncio protocol methods that follow it in the MRO.
    _ProtocolMixin = asyncio.Protocol
else:
    _ProtocolMixin = object


class _HeadLimits(_ProtocolMixin):
    """The head deadline and size bound, shared by both parsers' protocols (needs their ``loop`` and
    ``transport``)."""

    HEAD_TIMEOUT_S = _from_env("head_timeout_s", 10.0)
    MAX_HEAD_BYTES = int(_from_env("max_header_bytes", 64 * 1024))
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # the parser's protocol, next in the MRO
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head()
        super().connection_lost(exc)

    def _start_head(self) -> None:
        if self._head_timer is None:
            self._head_bytes = 0
            self._head_timer = self.loop.call_later(self.HEAD_TIMEOUT_S, self._refuse, 408)

    def _end_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _in_head(self) -> bool:
        return self._head_timer is not None

    def _head_too_large(self, more: int) -> bool:
        """Count ``more`` bytes of the current head; past the bound, answer 431, close, and return ``True``."""
        self._head_bytes += more
        if self._head_bytes <= self.MAX_HEAD_BYTES:
            return False
        self._end_head()
        self._refuse(431)
        return True

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


class GuardedHttpToolsProtocol(_HeadLimits, HttpToolsProtocol):
    """:class:`HttpToolsProtocol` whose request heads have a deadline and a size bound (set before serving)."""

    def data_received(self, data: bytes) -> None:
        in_head = self._in_head()
        super().data_received(data)
        if in_head and self._in_head():  # the head is still incomplete after this chunk
            self._head_too_large(len(data))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_head()

    def on_headers_complete(self) -> None:
        self._end_head()
        super().on_headers_complete()


class GuardedH11Protocol(_HeadLimits, H11Protocol):
    """:class:`H11Protocol` with the same head deadline and size bound.

    h11 reports no "message begins" event: a head begins with the first byte that reaches a connection waiting for
    a request (``their_state`` IDLE) and is complete once h11 has parsed it (``their_state`` moved on). uvicorn must
    give h11 a larger ``h11_max_incomplete_event_size`` than ``MAX_HEAD_BYTES`` for the 431 to come from here (h11
    itself answers 400).
    """

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._start_head()
            if self._head_too_large(len(data)):
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._end_head()


def set_head_limits(timeout_s: float, max_bytes: int) -> None:
    """Set the head deadline (seconds) and size bound (bytes) of both protocols in this process."""
    _HeadLimits.HEAD_TIMEOUT_S, _HeadLimits.MAX_HEAD_BYTES = timeout_s, max_bytes


__all__ = ["GuardedH11Protocol", "GuardedHttpToolsProtocol", "set_head_limits"]
