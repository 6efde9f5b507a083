"""mitmproxy's per-message field type check, switched off for the messages the gateway serves.

mitmproxy type-checks every field of every `Request` and `Response` it builds, in
`MessageData.__post_init__`, which it defines only `if __debug__` (a development aid that
`python -O` drops). The check costs about 83 µs per request/response pair, and each
`X | None` field holding `None` raises and catches a `TypeError` whose traceback ties frames
into a reference cycle: eight per request, garbage only the cyclic collector frees, so
collection pauses come more often. What it checks comes from mitmproxy's own parser and
from our code, which mypy (strict) types, so at run time it finds nothing.

`install()` replaces that one method by a no-op. It does not run the gateway under
`python -O`, which would also drop every `assert` of mitmproxy, h11 and the other
libraries the gateway runs: their internal invariants stay checked.
"""

from __future__ import annotations

from mitmproxy import http

MITMPROXY_CHECK = vars(http.MessageData).get("__post_init__")
"""mitmproxy's own check (None under -O), as it was before `install`: for the tests."""


def _unchecked(self: http.MessageData) -> None:
    """A message's fields, not type-checked (see the module docstring)."""


def install() -> None:
    """Switch the check off (idempotent; nothing to do when mitmproxy runs under -O)."""
    if "__post_init__" in vars(http.MessageData):
        http.MessageData.__post_init__ = _unchecked  # type: ignore[method-assign]
