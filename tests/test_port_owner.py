"""port_owner: a failed bind names the port and the process that holds it."""

from __future__ import annotations

import errno
import os
import socket

from flm_gateway.proxy.port_owner import bind_failure, listening_pid


def test_a_port_in_use_names_its_holder() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert listening_pid(port) == os.getpid()
        message = bind_failure("127.0.0.1", port, OSError(errno.EADDRINUSE, "in use"))
    assert message.startswith(f"port {port} on 127.0.0.1 is already in use by ")
    assert f"pid {os.getpid()}" in message


def test_a_port_nobody_listens_on_names_no_one() -> None:
    with socket.socket() as bound_only:  # bound, not listening: no holder to name
        bound_only.bind(("127.0.0.1", 0))
        port = bound_only.getsockname()[1]
        message = bind_failure("127.0.0.1", port, OSError(errno.EADDRINUSE, "in use"))
    assert message == f"port {port} on 127.0.0.1 is already in use"


def test_other_failures_keep_the_reason() -> None:
    message = bind_failure("::1", 80, OSError(errno.EACCES, "Permission denied"))
    assert message == "cannot listen on [::1]:80: permission denied"
