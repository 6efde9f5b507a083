"""`python -m bench.intrusion`: the CPU each intrusion rule costs on its worst input.

For every rule, pathological inputs of the longest single input the HTTP layer
admits (`LONGEST_VALUE`: a request or header line of `server.limits` at its
defaults, 8 KiB) built from the rule's own pieces and from the pieces that made the
old backtracking patterns blow up (`pathological_inputs`): the issue's `() {` and
spaces, long runs of each character a quantifier accepts, repeated prefixes and
near-misses. Each is searched with the rule's compiled pattern, in process, and
timed in CPU time of this thread (`time.thread_time_ns`, best of `--repeat`).
Prints, per rule, its slowest input and the time of one search on it; then the
same for each input kind's combined pattern and for `inspect()` on a whole
request as large as the HTTP layer admits (`limit_request` with `MAX_FILL` bytes:
the target fills the request line, three header values the rest of the head), and
on the slowest such target with as many header lines as admitted instead
(`crowded_request`: a hit in every line makes each line be inspected on its own).
`tests/adversarial/test_intrusion.py` uses the same inputs to check that the work
grows linearly with their size.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import time
from collections.abc import Callable, Sequence

from mitmproxy import http
from mitmproxy.test import tutils

from flm_gateway.addons.intrusion import inspect
from flm_gateway.config.limit_settings import ConnectionLimits
from flm_gateway.security.intrusion_rules import KINDS, RULES, Rule, RuleSet
from flm_gateway.security.linear_re import LinearPattern

# Pieces that made backtracking engines go super-linear, or that each quantifier of
# the rules accepts: every rule is tried on runs and repeats of all of them.
PIECES = (
    " ", "\t", "\x0b", "a", "1", "_", "/", ".", "%", "'", '"', "`", "(", ")", "{", "}", "$",
    "<", ">", "=", "&", ";", "|", "*", "+", "-", "#", "@", "\\", "\n", "\xff",
    "() {", "() { :;", "${", "${${", "$(", "../", "%2e", "%25", "/*", "/*!", "*/", "--",
    "' or ", "'or'", "') or ('", "union ", "union/**/", "union(", ";drop ", "; ", "| ",
    "<svg ", "<a ", "on", "javascript", "sleep(", "/etc/", "id_", "\\..",
)  # fmt: skip
_WORD = re.compile(r"[a-z_]{2,}")
LIMITS = ConnectionLimits()
"""`server.limits` at its defaults: the HTTP layer admits no larger request head."""
LONGEST_VALUE = max(LIMITS.max_url_length, LIMITS.max_header_line)
"""Bytes of the longest single input: a request line or a header line (8 KiB each)."""
_FILLED_HEADERS = (b"user-agent", b"referer", b"x-fill")
_REQUEST_LINE = len(b"GET  HTTP/1.1")  # and the target


def max_fill(limits: ConnectionLimits) -> int:
    """The longest `fill` for which `limit_request(fill)` is admitted under `limits`:
    its request line, a header line or the whole head reaches a limit."""
    head = _REQUEST_LINE + sum(len(name) + len(b": ") for name in _FILLED_HEADERS)
    lines = 1 + len(_FILLED_HEADERS)
    head += len(b"\r\n") * (lines + 1)  # each line's end, then the blank line
    return min(
        limits.max_url_length - _REQUEST_LINE,
        limits.max_header_line - max(len(name) + len(b": ") for name in _FILLED_HEADERS),
        (limits.max_head_size - head) // lines,
    )


MAX_FILL = max_fill(LIMITS)
"""`limit_request(fill)` with `fill` of this many bytes is the largest request admitted."""


def _fill(prefix: str, run: str, size: int) -> bytes:
    """`prefix` then `run` repeated, exactly `size` bytes."""
    body = (prefix + run * (size // max(len(run), 1) + 1)).encode("latin-1")
    return body[:size]


def pathological_inputs(rule: Rule, size: int) -> dict[str, bytes]:
    """Inputs of exactly `size` bytes that would make `rule`'s pattern backtrack, by name."""
    words = list(dict.fromkeys(_WORD.findall(rule.pattern)))[:12]
    pieces = [*PIECES, *words, *(word + " " for word in words)]
    inputs: dict[str, bytes] = {}
    for piece in pieces:
        inputs[f"run {piece!r}"] = _fill("", piece, size)
        inputs[f"{piece!r} then spaces"] = _fill(piece, " ", size)
        inputs[f"{piece!r} then 'a'"] = _fill(piece, "a", size)
    return inputs


def cpu_ns(search: Callable[[bytes], object], data: bytes, calls: int, repeat: int) -> float:
    """CPU nanoseconds of one `search(data)`: best of `repeat` rounds of `calls` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.thread_time_ns()
        for _ in range(calls):
            search(data)
        best = min(best, (time.thread_time_ns() - start) / calls)
    return best


def limit_request(fill: bytes) -> http.Request:
    """A GET whose target and three header values (User-Agent among them) are `fill`.

    With `fill` of `MAX_FILL` bytes, its head is as large as the HTTP layer admits.
    """
    request = tutils.treq(path=b"/" + fill[1:])
    request.headers = http.Headers([(name, fill) for name in _FILLED_HEADERS])
    return request


def crowded_request(target: bytes, run: str) -> http.Request:
    """A GET of `target` with as many header lines as the HTTP layer admits, each a value
    of `run` repeated, together filling the head exactly up to its limit.

    With a target of `MAX_FILL` bytes, the request line is at its limit too.
    """
    names = [b"x-%03d" % n for n in range(LIMITS.max_headers)]
    room = LIMITS.max_head_size - _REQUEST_LINE - len(target) - len(b"\r\n\r\n")
    room -= sum(len(name) + len(b": \r\n") for name in names)
    size, longer = divmod(room, len(names))
    values = [_fill("", run, size + (n < longer)) for n in range(len(names))]
    request = tutils.treq(path=target)
    request.headers = http.Headers(list(zip(names, values, strict=True)))
    return request


def worst(
    search: Callable[[bytes], object], inputs: dict[str, bytes], repeat: int
) -> tuple[str, float]:
    """(name, CPU ns) of the slowest of `inputs` for `search`."""
    timed = {name: cpu_ns(search, data, 3, repeat) for name, data in inputs.items()}
    name = max(timed, key=lambda key: timed[key])
    return name, timed[name]


def _names(requests: dict[str, http.Request]) -> dict[str, bytes]:
    """Each request's name, as the input `worst` passes on."""
    return {name: name.encode() for name in requests}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.intrusion", description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"| rule | slowest input of {LONGEST_VALUE} bytes | µs per search |")
    print("|---|---|---|")
    for rule in RULES:
        search = LinearPattern(rule.pattern).search
        name, ns = worst(search, pathological_inputs(rule, LONGEST_VALUE), args.repeat)
        print(f"| {rule.id} | {name} | {ns / 1000:.1f} |")
    rules = RuleSet(RULES)
    every = {k: v for rule in RULES for k, v in pathological_inputs(rule, LONGEST_VALUE).items()}
    for kind in KINDS:
        name, ns = worst(functools.partial(rules.scan, kind), every, args.repeat)
        print(f"| all `{kind}` rules (one pass) | {name} | {ns / 1000:.1f} |")
    fills = {k: v for rule in RULES for k, v in pathological_inputs(rule, MAX_FILL).items()}
    requests = {name: limit_request(data) for name, data in fills.items()}
    name, ns = worst(lambda data: inspect(requests[data.decode()], rules), _names(requests), 1)
    print(f"| `inspect()`, the largest request admitted | {name} | {ns / 1000:.1f} |")
    # The slowest target with every header line it admits, each line a hit or near-miss.
    target = b"/" + fills[name][1:]
    crowded = {f"{piece!r} lines": crowded_request(target, piece) for piece in PIECES}
    lines, ns = worst(lambda data: inspect(crowded[data.decode()], rules), _names(crowded), 1)
    row = f"`inspect()`, that target and {LIMITS.max_headers} header lines"
    print(f"| {row} | {lines} | {ns / 1000:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
