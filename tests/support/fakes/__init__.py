"""Protocol-faithful fake LLM engines (Ollama, vLLM, LM Studio, llama.cpp, OpenAI).

See `tests/support/fake_engines.py` for the public API and how to run one as a process.
"""

from tests.support.fakes.engine import KINDS, FakeEngine
from tests.support.fakes.process import main, start_fake_engine_process
from tests.support.fakes.state import Fault, Health, RecordedRequest

__all__ = [
    "KINDS",
    "FakeEngine",
    "Fault",
    "Health",
    "RecordedRequest",
    "main",
    "start_fake_engine_process",
]
