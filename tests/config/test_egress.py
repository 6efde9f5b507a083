"""The `egress:` section: the reference config, defaults, and every error a user can make."""

from __future__ import annotations

import pytest

from flm_gateway.config import ConfigError, parse_config
from flm_gateway.config.egress_settings import (
    DirectEgress,
    FailMode,
    Socks5Egress,
    TorEgress,
    engine_connect_timeout,
)

LISTENERS = 'listeners: [{name: main, bind: "127.0.0.1:8088"}]\n'

REFERENCE = (
    LISTENERS
    + """\
egress:
  bastion: {mode: socks5, url: "socks5://127.0.0.1:11080", fail: closed}
  onion: {mode: tor, socks: "127.0.0.1:9050", fail: closed}
engines:
  - name: far
    kind: openai
    url: http://127.0.0.1:18003
    egress: bastion
"""
)


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(LISTENERS + text, environ=environ or {})
    return [str(problem) for problem in caught.value.problems]


def test_the_reference_config_validates_as_written() -> None:
    config, _ = parse_config(REFERENCE, environ={})
    profiles = config.egress.profiles
    bastion, onion = profiles["bastion"], profiles["onion"]
    assert isinstance(bastion, Socks5Egress) and bastion.address == ("127.0.0.1", 11080)
    assert isinstance(onion, TorEgress) and onion.socks == ("127.0.0.1", 9050)
    assert isinstance(profiles["direct"], DirectEgress)
    assert config.engines[0].egress == "bastion"
    assert config.egress.default == "direct"


def test_defaults_fail_closed_and_a_short_connect_timeout() -> None:
    config, _ = parse_config(
        LISTENERS
        + """\
egress:
  s: {mode: socks5, url: "socks5h://proxy.internal:1080"}
  t: {mode: tor}
engines:
  - {name: a, url: "http://a:1", egress: s}
  - {name: b, url: "http://b:1", timeouts: {connect: 3s}}
""",
        environ={},
    )
    s, t = config.egress.profiles["s"], config.egress.profiles["t"]
    assert isinstance(s, Socks5Egress) and isinstance(t, TorEgress)
    assert s.fail is FailMode.CLOSED and t.fail is FailMode.CLOSED
    assert s.connect_timeout == 10.0 and t.socks == ("127.0.0.1", 9050)
    assert engine_connect_timeout(config.egress, config.engines[0]) == 10.0
    assert engine_connect_timeout(config.egress, config.engines[1]) == 3.0


def test_default_profile_applies_to_engines_without_egress() -> None:
    config, _ = parse_config(
        LISTENERS
        + """\
egress:
  default: t
  t: {mode: tor, connect_timeout: 20s}
engines: [{name: a, url: "http://x.onion"}]
""",
        environ={},
    )
    name, profile = config.egress.resolve(config.engines[0].egress)
    assert name == "t" and isinstance(profile, TorEgress)
    assert engine_connect_timeout(config.egress, config.engines[0]) == 20.0


def test_password_comes_from_the_environment_and_is_not_in_repr() -> None:
    config, _ = parse_config(
        LISTENERS
        + """\
egress:
  s: {mode: socks5, url: "socks5://127.0.0.1:1080", username: u, password: "${SOCKS_PW}"}
""",
        environ={"SOCKS_PW": "hunter2-secret"},
    )
    profile = config.egress.profiles["s"]
    assert isinstance(profile, Socks5Egress) and profile.password is not None
    assert profile.password.get_secret_value() == "hunter2-secret"
    assert "hunter2-secret" not in repr(config)


def test_unknown_profile_names_list_the_valid_choices() -> None:
    found = problems(
        """\
egress:
  default: nowhere
  bastion: {mode: socks5, url: "socks5://127.0.0.1:1"}
engines:
  - {name: a, url: "http://127.0.0.1:1", egress: bastoin}
"""
    )
    assert found == [
        "flm.yaml:3:12: egress.default: unknown egress profile 'nowhere'; "
        "defined profiles: bastion, direct",
        "flm.yaml:6:50: engines[0].egress: unknown egress profile 'bastoin'; "
        "defined profiles: bastion, direct",
    ]


def test_field_errors_point_at_the_field_without_the_union_tag() -> None:
    found = problems(
        """\
egress:
  a: {mode: socks5, url: "socks5://127.0.0.1:1", fail: shut}
  b: {mode: tor, sock: "127.0.0.1:9050"}
  c: {mode: socks5}
  d: {mode: carrier}
"""
    )
    assert found == [
        "flm.yaml:3:56: egress.a.fail: 'shut' is not valid; input should be 'closed' or 'open'",
        "flm.yaml:4:18: egress.b.sock: unknown key 'sock'; valid keys: connect_timeout, "
        "control, control_cookie, control_password, fail, mode, socks",
        "flm.yaml:5:6: egress.c.url: required key is missing",
        "flm.yaml:6:13: egress.d.mode: 'carrier' is not valid; "
        "expected one of 'direct', 'socks5', 'tor'",
    ]


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    (found,) = problems('egress:\n  a: {mode: socks5, url: "socks5://bob:s3cret@127.0.0.1:1"}\n')
    assert "use username: and password:" in found
    assert "s3cret" not in found


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ('{mode: socks5, url: "http://127.0.0.1:1"}', "must start with socks5://"),
        ('{mode: socks5, url: "socks5://127.0.0.1"}', "is not socks5://host:port"),
        ('{mode: socks5, url: "socks5://h:1", username: u}', "username and password go together"),
        ('{mode: socks5, url: "socks5://h:1", connect_timeout: 0}', "greater than 0"),
        ("{mode: tor, control_password: x}", "need control: host:port"),
        ("{mode: direct, fail: open}", "unknown key 'fail'"),
    ],
)
def test_invalid_profiles(profile: str, message: str) -> None:
    (found,) = problems(f"egress:\n  p: {profile}\n")
    assert message in found


def test_reserved_and_invalid_profile_names() -> None:
    (found,) = problems("egress:\n  direct: {mode: tor}\n")
    assert "'direct' is the built-in direct profile" in found
    (found,) = problems('egress:\n  "two words": {mode: direct}\n')
    assert "not a valid profile name" in found
    (found,) = problems("egress:\n  default: {mode: tor}\n")
    assert "'default' names the default profile" in found


def test_onion_engine_needs_a_proxied_egress() -> None:
    (found,) = problems("engines: [{name: h, url: 'http://abcdef.onion'}]\n")
    assert "engines[0].url: 'abcdef.onion' is a Tor onion address" in found


def test_an_address_cannot_be_both_direct_and_fail_closed() -> None:
    (found,) = problems(
        """\
egress:
  s: {mode: socks5, url: "socks5://127.0.0.1:1"}
engines:
  - {name: a, url: "http://10.0.0.5:8000", egress: s}
  - {name: b, url: "http://10.0.0.5:8000/other"}
"""
    )
    assert "engines[1].url: engine 'a' reaches the same host:port" in found


def test_a_numeric_password_is_taken_as_text() -> None:
    config, _ = parse_config(
        LISTENERS
        + 'egress:\n  s: {mode: socks5, url: "socks5://h:1", username: 42, password: 123456}\n',
        environ={},
    )
    profile = config.egress.profiles["s"]
    assert isinstance(profile, Socks5Egress) and profile.password is not None
    assert (profile.username, profile.password.get_secret_value()) == ("42", "123456")


def test_a_numeric_tor_control_password_is_taken_as_text() -> None:
    config, _ = parse_config(
        LISTENERS
        + 'egress:\n  t: {mode: tor, control: "127.0.0.1:9051", control_password: 2024}\n',
        environ={},
    )
    profile = config.egress.profiles["t"]
    assert isinstance(profile, TorEgress) and profile.control_password is not None
    assert profile.control_password.get_secret_value() == "2024"
