"""Fake LLM engines for tests and benchmarks: the public entry point.

In a test::

    async with FakeEngine(kind="vllm", models=["tiny-a"]) as eng:  # 127.0.0.1, free port
        eng.url                        # "http://127.0.0.1:PORT"
        eng.requests                   # [RecordedRequest(method, path, headers, json), ...]
        eng.set_fault(status=503)      # every request answers 503; set_fault(None) clears
        await eng.stop(); await eng.start()   # down, then back on the same port

As a process (benchmarks, integration tests)::

    python -m tests.support.fake_engines --kind vllm --port 18001 --models tiny-a,tiny-b \
        --chunks 64 --chunk-delay 0.002        # prints "READY http://127.0.0.1:18001"

    with start_fake_engine_process("vllm", ["tiny-a"]) as (process, url): ...

Per-request faults: headers `x-fake-status`, `x-fake-headers-delay`,
`x-fake-first-chunk-delay`, `x-fake-chunks`, `x-fake-chunk-delay`, `x-fake-close-after`,
`x-fake-error-after`, or the same names with underscores in a JSON body field `x_fake`.
The package `tests/support/fakes/` holds one module per engine kind; each module's
docstring lists the paths and quirks it reproduces and where they are documented.
"""

import sys

from tests.support.fakes import (
    KINDS,
    FakeEngine,
    Fault,
    Health,
    RecordedRequest,
    main,
    start_fake_engine_process,
)

__all__ = [
    "KINDS",
    "FakeEngine",
    "Fault",
    "Health",
    "RecordedRequest",
    "start_fake_engine_process",
]

if __name__ == "__main__":
    sys.exit(main())
