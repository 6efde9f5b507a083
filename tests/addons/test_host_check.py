"""host_check: a listener answers only requests that name it; 421 / 400 otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import http

from flm_gateway.addons.host_check import HostCheck, policy_for
from flm_gateway.config import LoadedConfig
from flm_gateway.core.hostnames import Authority, parse_authority
from flm_gateway.proxy.flow_meta import HOST, LISTENER, SECURITY_REJECTED
from flm_gateway.security.host_policy import HostPolicy
from tests.support.flows import configure, error_of
from tests.support.security import flow, loaded

BASE = """\
listeners:
  - {name: loop, bind: "127.0.0.1:8088", auth: none}
  - {name: wild, bind: "0.0.0.0:8089", auth: api-key}
  - name: named
    bind: "127.0.0.1:8090"
    auth: none
    hosts: [gw.example.test, "*.lan.example", "192.0.2.7", "[2001:db8::7]"]
  - {name: any, bind: "127.0.0.1:8091", auth: none, hosts: ["*"]}
  - {name: v6, bind: "[::1]:8092", auth: none}
  - {name: local, bind: "localhost:8093", auth: none}
  - name: tls
    bind: "127.0.0.1:8094"
    auth: none
    tls: {mode: dev-selfsigned, hostnames: [cert.example.test, "10.9.8.7"]}
engines:
  - {name: alpha, kind: vllm, url: "http://127.0.0.1:18001"}
"""


@pytest.fixture
def config(tmp_path: Path) -> LoadedConfig:
    return loaded("", tmp_path, base=BASE)


def policy(config: LoadedConfig, name: str) -> HostPolicy:
    (listener,) = [x for x in config.config.listeners if x.name == name]
    return policy_for(listener)


def accepts(config: LoadedConfig, name: str, host: str) -> bool:
    parsed = parse_authority(host)
    assert parsed is not None, host
    return policy(config, name).accepts(parsed)


TABLE = [
    ("loop", "127.0.0.1:8088", True),
    ("loop", "localhost", True),
    ("loop", "127.0.0.1:1", True),  # ports are not compared
    ("loop", "127.0.0.2", False),
    ("loop", "[::1]", False),
    ("loop", "rebind.attacker.example", False),
    ("loop", "sub.localhost", False),
    ("wild", "192.0.2.1", True),  # a wildcard bind takes every IP literal
    ("wild", "[2001:db8::1]", True),
    ("wild", "localhost", True),
    ("wild", "gateway.lan", False),  # names must be listed
    ("named", "gw.example.test", True),
    ("named", "a.lan.example", True),
    ("named", "a.b.lan.example", True),
    ("named", "lan.example", False),
    ("named", "192.0.2.7", True),
    ("named", "[2001:db8:0::7]", True),
    ("named", "192.0.2.8", False),
    ("named", "gw.example.test.evil", False),
    ("any", "anything.example", True),
    ("any", "10.0.0.1", True),
    ("v6", "[::1]", True),
    ("v6", "[0:0::1]:8092", True),
    ("v6", "127.0.0.1", False),
    ("local", "127.0.0.1", True),
    ("local", "[::1]", True),
    ("local", "127.0.0.2", False),
    ("tls", "cert.example.test", True),
    ("tls", "10.9.8.7", True),
    ("tls", "other.example.test", False),
]


@pytest.mark.parametrize(("listener", "host", "expected"), TABLE)
def test_policy(config: LoadedConfig, listener: str, host: str, expected: bool) -> None:
    assert accepts(config, listener, host) is expected


ACME = """\
  - name: acme
    bind: "127.0.0.1:8095"
    auth: none
    tls:
      mode: https-acme
      domains: [api.example.test, "*.wild.example.test"]
      acme: {challenge: dns-01, dns: {command: [/bin/true]}}
"""


def test_acme_domains_are_names_of_the_listener(tmp_path: Path) -> None:
    config = loaded("", tmp_path, base=BASE.replace("engines:", ACME + "engines:"))
    assert accepts(config, "acme", "api.example.test")
    assert accepts(config, "acme", "x.wild.example.test")
    assert not accepts(config, "acme", "wild.example.test")


def run(config: LoadedConfig, port: int, **kwargs: object) -> http.HTTPFlow:
    checker = HostCheck()
    configure(config, checker)
    target = flow(config, port=port, **kwargs)  # type: ignore[arg-type]
    checker.requestheaders(target)
    return target


def test_accepted_hosts_are_noted_for_same_origin_checks(config: LoadedConfig) -> None:
    target = run(config, 8088, headers={"host": "LOCALHOST.:8088"})
    assert target.response is None
    assert HOST.require(target) == Authority("localhost", 8088, False)


def test_misdirected_and_malformed(config: LoadedConfig) -> None:
    target = run(config, 8088, headers={"host": "rebind.attacker.example:8088"})
    status, error = error_of(target)
    assert (status, error["code"]) == (421, "misdirected_request")
    assert "rebind.attacker.example" in error["message"]
    assert SECURITY_REJECTED.require(target) == "host"
    assert not HOST.is_set(target)
    target = run(config, 8088, headers={"host": "user@127.0.0.1"})
    assert error_of(target)[0] == 400
    assert error_of(target)[1]["code"] == "invalid_host"


def test_a_hostile_host_is_echoed_safely(config: LoadedConfig) -> None:
    target = run(config, 8091, headers={"host": "a" * 63 + ".example"})  # `any` takes it
    assert target.response is None
    target = run(config, 8088, headers={"host": ("a" * 60 + ".") * 4 + "x"})
    status, error = error_of(target)
    assert status == 421 and len(error["message"]) < 400


def test_duplicate_and_missing_host(config: LoadedConfig) -> None:
    target = flow(config, port=8088)
    target.request.headers.fields = (
        (b"Host", b"127.0.0.1:8088"),
        (b"host", b"127.0.0.1:8088"),
    )
    checker = HostCheck()
    configure(config, checker)
    checker.requestheaders(target)
    assert error_of(target)[0] == 400
    for version, status in (("HTTP/1.1", 400), ("HTTP/1.0", None)):
        target = flow(config, port=8088)
        del target.request.headers["host"]
        target.request.http_version = version
        checker.requestheaders(target)
        if status is None:
            assert target.response is None and HOST.require(target) is None
        else:
            assert error_of(target)[0] == status


def test_absolute_form(config: LoadedConfig) -> None:
    checker = HostCheck()
    configure(config, checker)
    cases = [
        ("rebind.attacker.example:8088", "127.0.0.1:8088", 400, "host_mismatch"),
        ("rebind.attacker.example:8088", None, 421, "misdirected_request"),
        ("127.0.0.1:8088", "127.0.0.1:8088", None, None),
        ("127.0.0.1", "127.0.0.1:80", None, None),  # default ports are equal
        ("127.0.0.1:80", "127.0.0.1:8088", 400, "host_mismatch"),
    ]
    for authority, host, status, code in cases:
        target = flow(config, port=8088)
        target.client_conn.timestamp_tls_setup = None  # plain HTTP: port 80 is the default
        if host is None:
            del target.request.headers["host"]
        else:
            target.request.headers["host"] = host
        target.request.authority = authority
        checker.requestheaders(target)
        if status is None:
            assert target.response is None, authority
        else:
            assert error_of(target)[0] == status and error_of(target)[1]["code"] == code


def test_already_answered_and_unknown_listener_flows_are_left_alone(
    config: LoadedConfig,
) -> None:
    checker = HostCheck()
    configure(config, checker)
    answered = flow(config, port=8088, headers={"host": "rebind.attacker.example"})
    answered.response = http.Response.make(204)
    checker.requestheaders(answered)
    assert answered.response.status_code == 204
    orphan = flow(config, port=9999, headers={"host": "rebind.attacker.example"})
    assert LISTENER.require(orphan) is None
    checker.requestheaders(orphan)
    assert orphan.response is None  # listener_context answers 503 for it


def test_the_usual_spellings_are_what_the_parser_reads(config: LoadedConfig) -> None:
    for listener in config.config.listeners:
        usual = policy_for(listener).usual
        assert usual, listener.name
        for raw, authority in usual.items():
            assert parse_authority(raw.decode()) == authority, (listener.name, raw)
            assert policy_for(listener).accepts(authority)


def test_a_name_only_star_lets_in_vouches_for_nothing(config: LoadedConfig) -> None:
    target = run(config, 8091, headers={"host": "rebind.attacker.example:8091"})
    assert target.response is None and HOST.require(target) is None
    target = run(config, 8091, headers={"host": "localhost:8091"})
    assert HOST.require(target) == Authority("localhost", 8091, False)
