"""linear_re: RE2 patterns over bytes, case-insensitive, one value per line."""

from __future__ import annotations

import pytest

from flm_gateway.security.linear_re import LinearPattern, RegexError


def test_bytes_as_latin1_case_insensitive_multiline() -> None:
    pattern = LinearPattern(r"^\s*\(\s*\)\s*\{")
    assert pattern.search(b"() {")
    assert pattern.search(b"a\n  ( ) {")  # a later line starts with it
    assert not pattern.search(b"a() {")
    assert LinearPattern("union select").search(b"\xff\xfe UNION SELECT")
    assert LinearPattern(r"\xff").search(b"a\xffb")  # any byte is one character


def test_any_of() -> None:
    either = LinearPattern.any_of(["abc", r"\d{3}"])
    assert either.search(b"xxABCxx") and either.search(b"x123") and not either.search(b"ab12")
    with pytest.raises(ValueError, match="at least one"):
        LinearPattern.any_of([])


@pytest.mark.parametrize("pattern", [r"(?<=a)b", r"a(?=b)", r"(a)\1", r"a*+", r"(?>a)"])
def test_backtracking_syntax_is_refused(pattern: str) -> None:
    with pytest.raises(RegexError):
        LinearPattern(pattern)


def test_the_issue_input_is_searched_in_one_pass() -> None:
    # The pattern that took 37 s in Python's re: three adjacent \s* around optional pieces.
    old = LinearPattern(r"\(\)\s*\{\s*:?\s*;?\s*\}\s*;")
    assert not old.search(b"() {" + b" " * 4000 + b"x")
    assert old.search(b"() { :; };")
