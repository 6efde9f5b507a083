"""The gateway serves under `python -O`: mitmproxy's debug-only type checks stay off.

mitmproxy type-checks every field of every `Request` and `Response` it builds, in
`MessageData.__post_init__`, which it defines only `if __debug__` (i.e. not under
`python -O`). Those checks cost about a tenth of a request's CPU, and each
`X | None` field that holds `None` raises and catches a `TypeError` whose
traceback ties frames into a reference cycle: eight per request, garbage that only
the cyclic collector frees, so collections (pauses) come more often. Our own code
has no `assert` (access control never relies on one, see STYLE.md), so `-O`
changes nothing else for it.

`reexec_argv` gives the command line to run this same process again under `-O`
(`os.execv` keeps the pid, so service managers and the pid file see one
process), or None when the interpreter already optimizes or the original
command line is unknown. Only the `run` command re-executes; every other command
is short-lived and keeps the interpreter it was started with.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def reexec_argv(flags_optimize: int, executable: str, orig_argv: Sequence[str]) -> list[str] | None:
    """`[executable, "-O", <the original arguments>]`, or None (see the module docstring)."""
    if flags_optimize > 0 or not executable or len(orig_argv) < 2:
        return None
    return [executable, "-O", *orig_argv[1:]]


def serve_optimized() -> None:
    """Replace this process by the same command under `python -O` (returns only if
    that is not needed or not possible)."""
    argv = reexec_argv(sys.flags.optimize, sys.executable, sys.orig_argv)
    if argv is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(argv[0], argv)  # noqa: S606 (our own interpreter and arguments, no shell)
    except OSError:
        return  # serve unoptimized: slower, but the same behaviour
