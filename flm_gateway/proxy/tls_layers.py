"""Which protocol layer a new client connection on a listener gets: the fail-closed part of TLS.

mitmproxy autodetects TLS per connection on a reverse listener. The gateway
does not: a listener is either TLS or plain HTTP, decided by its tls.mode.
- A TLS listener accepts only a TLS ClientHello. Plain HTTP gets one
  `400 https_required` (OpenAI error shape) and the connection is closed; any
  other bytes are closed without an answer.
- A `local-http` listener refuses a TLS ClientHello (closes the connection)
  instead of letting mitmproxy terminate TLS with its own generated CA.
The decision needs only the client's first byte(s), so it never waits for more
data: a TLS record starts with 0x16 0x03, an HTTP request with a letter.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from mitmproxy.proxy import commands, events, layer, tunnel
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import ClientTLSLayer, HttpLayer
from mitmproxy.proxy.layers.http import HTTPMode

from flm_gateway.core.errors import error_body

HTTPS_REQUIRED_MESSAGE = "This listener only accepts HTTPS; use an https:// URL."


def could_be_tls(data: bytes) -> bool:
    """True when `data` is (a prefix of) a TLS handshake record header."""
    if not data or data[0] != 0x16:
        return False
    if len(data) >= 2 and data[1] != 0x03:
        return False
    return len(data) < 3 or data[2] <= 0x04


def looks_like_http(data: bytes) -> bool:
    return data[:1].isalpha()


def https_required_response() -> bytes:
    body = error_body(400, HTTPS_REQUIRED_MESSAGE, code="https_required")
    head = (
        "HTTP/1.1 400 Bad Request\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "cache-control: no-store\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class RefuseLayer(layer.Layer):
    """Optionally sends `reply`, then closes the client connection; ignores everything after."""

    def __init__(self, context: Context, reply: bytes, reason: str) -> None:
        super().__init__(context)
        self.reply = reply
        self.reason = reason

    def _handle_event(self, event: events.Event) -> Generator[commands.Command, Any, None]:
        if isinstance(event, events.Start):
            peer = self.context.client.peername
            yield commands.Log(f"refused connection from {peer}: {self.reason}", logging.INFO)
            if self.reply:
                yield commands.SendData(self.context.client, self.reply)
            yield commands.CloseConnection(self.context.client)


def plan_layer(context: Context, data: bytes, *, serves_tls: bool, listener: str) -> layer.Layer:
    """The layer for a new connection on a listener, from the client's first bytes."""
    stack = tunnel.LayerStack()
    if serves_tls:
        if not could_be_tls(data):
            reply = https_required_response() if looks_like_http(data) else b""
            return RefuseLayer(context, reply, f"plain HTTP on TLS listener {listener}")
        stack /= ClientTLSLayer(context)
    elif data[:1] == b"\x16" or not looks_like_http(data):
        return RefuseLayer(context, b"", f"not HTTP (TLS?) on plain-HTTP listener {listener}")
    stack /= HttpLayer(context, HTTPMode.transparent)
    first: layer.Layer = stack[0]
    return first
