"""`python -m bench.footprint`: what the idle gateway's memory and start-up time consist of.

In a fresh interpreter (with `mitm_lean` installed first, as the CLI does) the groups of
`GROUPS` are imported one after another, in the order the gateway imports them, and the
growth of the resident size and the time after each is printed; then the gateway is
built from a minimal flm.yaml and started, and the same is printed for those phases.
Each group's figure is what it adds on top of the groups before it (a module shared by
two groups counts for the first). Times are wall-clock: on a busy box they stretch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# Only what the measured child needs is imported here (not asyncio, which loads ssl): the
# rest would count as "Python" and hide in it what the gateway's imports pull in.

GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sqlite3, PyYAML", ("sqlite3", "yaml")),
    ("pydantic, pydantic_core", ("pydantic",)),
    ("cryptography (x509, its Rust extension)", ("cryptography.x509",)),
    ("pyOpenSSL, mitmproxy.certs", ("OpenSSL.SSL", "mitmproxy.certs")),
    ("mitmproxy.http, flow, connection (mitmproxy_rs, wsproto)", ("mitmproxy.http",)),
    (
        "aioquic, service_identity, pylsqpack (HTTP/3, QUIC)",
        ("aioquic.tls", "aioquic.h3.connection"),
    ),
    ("mitmproxy.proxy.layers (HTTP/1, 2, 3, QUIC, TLS; h2)", ("mitmproxy.proxy.layers",)),
    ("pyparsing, mitmproxy.command", ("pyparsing", "mitmproxy.command")),
    (
        "mitmproxy's four addons",
        tuple(f"mitmproxy.addons.{a}" for a in ("core", "proxyserver", "next_layer", "tlsconfig")),
    ),
    ("google-re2 (intrusion rules)", ("re2",)),
    ("flm_gateway.config (its pydantic models)", ("flm_gateway.config",)),
    ("flm_gateway pipeline, gateway and CLI", ("flm_gateway.app.gateway", "flm_gateway.cli")),
)


def _status() -> dict[str, float]:
    values: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            values[key] = int(rest.split()[0]) / 1024
    return values


class Table:
    """Prints one row per step: RSS after it, what it added (anon / file), seconds."""

    def __init__(self) -> None:
        self.last, self.clock = _status(), time.perf_counter()
        print("| step | RSS MiB | added MiB | of it anon / file | s |")
        print("|---|---|---|---|---|")
        print(f"| Python {sys.version.split()[0]} | {self.last['VmRSS']:.1f} | | | |")

    def row(self, step: str) -> None:
        now, clock = _status(), time.perf_counter()
        added = {key: now[key] - self.last[key] for key in now}
        print(
            f"| {step} | {now['VmRSS']:.1f} | {added['VmRSS']:+.1f} | "
            f"{added['RssAnon']:+.1f} / {added['RssFile']:+.1f} | {clock - self.clock:.2f} |",
            flush=True,
        )
        self.last, self.clock = now, clock


async def _start(config: Path, table: Table) -> None:
    import asyncio

    from flm_gateway.app.gateway import Gateway
    from flm_gateway.config.loader import load_config

    loaded = load_config(config)
    table.row("config loaded")
    gateway = Gateway(loaded)
    table.row("Gateway built (addons, state store)")
    await gateway.start()
    table.row("started: mitmproxy master, listener bound")
    await asyncio.sleep(1)
    table.row("idle 1 s")
    gateway.request_stop()
    await gateway.stop()


def measure(config: Path) -> None:
    """The table, in this process (run it in a fresh one: `main` does)."""
    from flm_gateway.proxy import mitm_lean

    table = Table()
    mitm_lean.install()
    for name, modules in GROUPS:
        for module in modules:
            importlib.import_module(module)
        table.row(name)
    import asyncio

    asyncio.run(_start(config, table))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint", description=__doc__)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)  # the child's side
    args = parser.parse_args(argv)
    if args.config is not None:
        measure(args.config)
        return 0
    import subprocess
    import tempfile

    from bench.processes import clean_env, free_port
    from bench.targets import REPO_ROOT, gateway_config

    with tempfile.TemporaryDirectory(prefix="flm-footprint-") as tmp:
        config = Path(tmp) / "flm.yaml"
        engine = f"http://127.0.0.1:{free_port()}"  # nothing listens: no request is made
        config.write_text(gateway_config(Path(tmp), free_port(), engine))
        done = subprocess.run(
            [sys.executable, "-m", "bench.footprint", "--config", str(config)],
            env=clean_env(PYTHONPATH=str(REPO_ROOT), HOME=tmp),
            cwd=REPO_ROOT,
            timeout=120,
            check=False,
        )
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
