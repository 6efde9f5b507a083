"""`flm-gateway chat`: what a model writes cannot drive the terminal."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from flm_gateway.cli.chat_command import chat_loop
from flm_gateway.cli.engines_command import print_table


class ScriptedClient:
    """A chat client whose model answers with terminal escape sequences."""

    def stream(self, model: str, history: list[dict[str, Any]]) -> Iterator[str]:
        yield "line one\n\tindented "
        yield "\x1b]0;owned\x07\x1b[2J\u202eevil\r"


def test_replies_keep_lines_and_tabs_but_not_escapes() -> None:
    out = io.StringIO()
    chat_loop(ScriptedClient(), "m", None, io.StringIO("hello\n"), out)  # type: ignore[arg-type]
    shown = out.getvalue()
    assert "line one\n\tindented \\x1b]0;owned\\x07\\x1b[2J\\u202eevil\\x0d" in shown
    assert not any(char in shown for char in "\x1b\x07\u202e\r")


def test_engine_tables_escape_what_engines_report(capsys: Any) -> None:
    print_table(["MODEL", "DETAIL"], [["tiny\x1b[31m", "down\r\n\u202e"]])
    out = capsys.readouterr().out
    assert out.splitlines()[1] == "tiny\\x1b[31m  down\\x0d\\x0a\\u202e"
