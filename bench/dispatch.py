"""`python -m bench.dispatch`: mitmproxy's hook-dispatch cost for our addons, with and without
`AddonChain`, in process and without sockets (so the box's load barely matters).

A Master holds mitmproxy's four core addons (as the gateway loads them) and, either as
ten top-level addons or inside one `AddonChain`, no-op stand-ins with exactly the hooks
of our pipeline's addons. Each "request" fires the four events a proxied request fires
(requestheaders, request, responseheaders, response; mitmproxy adds an `update` after
each). Prints µs per request, best of `--repeat`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

from mitmproxy import hooks
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.options import Options
from mitmproxy.proxy.layers.http._hooks import (
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.test import tflow

from flm_gateway.addons.inflight import Inflight
from flm_gateway.app.pipeline import build_addons
from flm_gateway.proxy.addon_chain import AddonChain, hook_names


def stand_ins() -> list[object]:
    """No-op addons with the names and hooks of the real pipeline (async where ours are)."""
    made: list[object] = []
    for addon in build_addons(Inflight()):
        namespace: dict[str, Any] = {}
        for name in hook_names(addon):
            if asyncio.iscoroutinefunction(getattr(addon, name)):

                async def hook(self: object, *args: object) -> None:
                    return None
            else:

                def hook(self: object, *args: object) -> None:  # type: ignore[misc]
                    return None

            namespace[name] = hook
        made.append(type(type(addon).__name__, (), namespace)())
    return made


async def per_request_us(chained: bool, requests: int) -> float:
    master = Master(Options())
    master.addons.add(
        core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig()
    )
    ours = stand_ins()
    if chained:
        master.addons.add(AddonChain(ours))
    else:
        master.addons.add(*ours)
    flow = tflow.tflow(resp=True)
    events: list[hooks.Hook] = [
        HttpRequestHeadersHook(flow),
        HttpRequestHook(flow),
        HttpResponseHeadersHook(flow),
        HttpResponseHook(flow),
    ]
    start = time.perf_counter()
    for _ in range(requests):
        for event in events:
            await master.addons.handle_lifecycle(event)
    return (time.perf_counter() - start) / requests * 1e6


async def measure(requests: int, repeat: int) -> dict[str, float]:
    best = {"ten addons": float("inf"), "AddonChain": float("inf")}
    for _ in range(repeat):
        best["ten addons"] = min(best["ten addons"], await per_request_us(False, requests))
        best["AddonChain"] = min(best["AddonChain"], await per_request_us(True, requests))
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch", description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    best = asyncio.run(measure(args.requests, args.repeat))
    print("| our addons registered as | hook dispatch µs per request (best) |")
    print("|---|---|")
    for name, value in best.items():
        print(f"| {name} | {value:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
