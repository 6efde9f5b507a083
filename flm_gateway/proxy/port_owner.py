"""Who holds a TCP port, named in the error when one of our listeners cannot bind.

`bind_failure` turns a failed bind into one sentence. For a port already in use
it names the process that listens there when it can ("port 8088 on 127.0.0.1 is
already in use by flm-gateway pid 4242"): psutil reads the listening sockets
(on Linux /proc/net/tcp{,6}, matched with the socket inodes under /proc/*/fd).
This is best effort: a process of another user is found only as root, and when
none is found the sentence says so without a pid.
"""

from __future__ import annotations

import errno

import psutil

from flm_gateway.config.types import format_host_port
from flm_gateway.state.process import is_gateway


def listening_pid(port: int) -> int | None:
    """The pid of a process listening on TCP `port` (any address), if one can be seen."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for conn in connections:
        listening = conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        if listening and conn.pid:
            return int(conn.pid)
    return None


def describe_process(pid: int) -> str:
    """`flm-gateway pid N` for one of ours, `pid N (name)` for anything else."""
    if is_gateway(pid):
        return f"flm-gateway pid {pid}"
    try:
        return f"pid {pid} ({psutil.Process(pid).name()})"
    except (psutil.Error, OSError):
        return f"pid {pid}"


def bind_failure(host: str, port: int, exc: OSError) -> str:
    """What went wrong binding host:port, in one sentence without mitmproxy's internals."""
    if exc.errno == errno.EADDRINUSE:
        pid = listening_pid(port)
        holder = f" by {describe_process(pid)}" if pid is not None else ""
        return f"port {port} on {host} is already in use{holder}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {format_host_port((host, port))}: no such local address"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {format_host_port((host, port))}: permission denied"
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"cannot listen on {format_host_port((host, port))}: {reason}"
