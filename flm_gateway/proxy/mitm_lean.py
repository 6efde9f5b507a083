"""Import only the mitmproxy addons the gateway uses.

`mitmproxy/addons/__init__.py` imports all 31 of mitmproxy's default addons, and with
them Flask, Jinja2, Werkzeug and ldap3: about 16 MiB of resident memory
the gateway never uses (it runs `core`, `proxyserver`, `next_layer` and `tlsconfig`
only). `install()` registers `mitmproxy.addons` as a bare package whose submodules
import as usual, without running that `__init__`. It must run before anything imports
`mitmproxy.addons`; the CLI calls it first. Where it did not run (tests importing the
gateway directly), everything still works, with the larger footprint.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

PACKAGE = "mitmproxy.addons"


def install() -> bool:
    """Register the bare package; False when mitmproxy.addons was already imported."""
    if PACKAGE in sys.modules:
        return False
    spec = importlib.util.find_spec("mitmproxy")
    if spec is None or spec.origin is None:
        return False
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(Path(spec.origin).parent / "addons")]
    package.__package__ = PACKAGE
    sys.modules[PACKAGE] = package
    return True
