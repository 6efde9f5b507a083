"""flm-gateway: one secure, OpenAI-compatible endpoint in front of self-hosted LLM engines."""

__version__ = "0.1.0"
