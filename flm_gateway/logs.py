"""Process logging: our records at the configured level, mitmproxy's own kept quiet.

mitmproxy logs every client connect and disconnect at INFO; a gateway only
wants its warnings. Secrets never reach a log record: addons log engine and
key names, never header values.
"""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str) -> None:
    """Human-readable records on stderr at `level` (debug, info, warning, error)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
