"""Load the llama-server fixtures for the tests of tests/support itself.

The root tests/conftest.py is expected to load them for everyone with
`pytest_plugins = ["tests.support.llama_fixtures"]`; re-exporting them here is harmless then
(the hook is idempotent) and keeps these tests runnable on their own.
"""

from tests.support.llama_fixtures import (
    llama_server,
    llama_server_binary,
    make_llama_server,
    pytest_collection_finish,
    tiny_model,
)

__all__ = [
    "llama_server",
    "llama_server_binary",
    "make_llama_server",
    "pytest_collection_finish",
    "tiny_model",
]
