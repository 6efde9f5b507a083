"""One reading of every request body: the strict readers and the field types of the API.

The gateway decides on fields it reads out of a body (`model`, `max_tokens`,
`stream`...) and the engine acts on what *its* parser reads out of the same bytes.
Everything here exists so that the two can never differ: `strict_json` and
`multipart` refuse every input that two reasonable parsers could read differently,
`schema` checks the types of the fields the gateway knows. Pure functions, no flows:
the `openai_api` addon applies them.
"""

from __future__ import annotations


class BodyError(ValueError):
    """A request body the gateway refuses: 400 with `message`, `code` and `param`."""

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
