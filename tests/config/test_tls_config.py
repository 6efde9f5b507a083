"""The tls: block: the issue's reference config validates as written; every misuse is an error
with its position."""

from __future__ import annotations

import pytest

from flm_gateway.config import ConfigError, parse_config
from flm_gateway.config.tls_settings import AcmeChallenge, TlsMode, TlsVersion

REFERENCE = """\
listeners:
  - name: acme
    bind: 127.0.0.1:8443
    tls:
      mode: https-acme
      domains: [gw.test]
      acme:
        directory: https://127.0.0.1:14000/dir
        ca_bundle: /path/to/pebble-listener-ca.pem   # trust for the ACME server's own TLS
        email: ops@gw.test
        challenge: http-01          # http-01 | dns-01
        http_port: 5002
  - name: lan
    bind: 127.0.0.1:8444
    tls: {mode: packaged-ca, hostnames: [gw.lan]}
  - name: dev
    bind: 127.0.0.1:8445
    tls: {mode: dev-selfsigned, hostnames: [localhost]}
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, environ={})
    return [str(problem) for problem in info.value.problems]


def test_reference_config_validates_with_defaults() -> None:
    config, _ = parse_config(REFERENCE, environ={})
    acme_tls = config.listeners[0].tls
    assert acme_tls.mode == TlsMode.HTTPS_ACME and acme_tls.acme is not None
    assert acme_tls.acme.challenge == AcmeChallenge.HTTP_01 and acme_tls.acme.http_port == 5002
    assert acme_tls.acme.renew_before == pytest.approx(1 / 3)
    assert acme_tls.min_version == TlsVersion.TLS1_2 and acme_tls.hsts is None
    assert acme_tls.redirect_http is None
    assert config.listeners[1].tls.hostnames == ["gw.lan"]


def test_unknown_keys_inside_acme_are_errors() -> None:
    text = REFERENCE.replace(
        "        http_port: 5002", "        http_port: 5002\n        htp_port: 1"
    )
    [problem] = errors(text)
    assert problem.startswith("flm.yaml:13:9: listeners[0].tls.acme.htp_port: unknown key")
    assert "valid keys:" in problem and "http_port" in problem


def test_wildcard_needs_dns01_and_dns01_needs_one_publisher() -> None:
    text = REFERENCE.replace("domains: [gw.test]", 'domains: [gw.test, "*.gw.test"]')
    assert errors(text) == [
        "flm.yaml:6:26: listeners[0].tls.domains[1]: '*.gw.test': wildcard names can only be "
        "validated with challenge: dns-01"
    ]
    dns = text.replace("challenge: http-01", "challenge: dns-01").replace(
        "        http_port: 5002\n", ""
    )
    assert errors(dns) == [
        "flm.yaml:11:20: listeners[0].tls.acme.challenge: dns-01 needs acme.dns: with one of "
        "command, webhook or rfc2136"
    ]
    both = dns + ""
    both = both.replace(
        "challenge: dns-01",
        "challenge: dns-01\n        dns: {command: [hook], webhook: {url: 'http://h/x'}}",
    )
    [problem] = errors(both)
    assert (
        "acme.dns: set exactly one of command, webhook or rfc2136 (found command, webhook)"
        in problem
    )


def test_settings_used_by_another_mode_are_errors() -> None:
    text = REFERENCE.replace(
        "tls: {mode: packaged-ca, hostnames: [gw.lan]}",
        "tls: {mode: packaged-ca, hostnames: [gw.lan], domains: [x.lan], acme: {}}",
    ).replace(
        "tls: {mode: dev-selfsigned, hostnames: [localhost]}",
        "tls: {mode: local-http, hostnames: [a.b], hsts: {}}",
    )
    found = errors(text)
    assert any("listeners[1].tls.domains: only used with mode: https-acme" in p for p in found)
    assert any("listeners[1].tls.acme: only used with mode: https-acme" in p for p in found)
    assert any(
        "listeners[2].tls.hostnames: has no effect with mode: local-http" in p for p in found
    )
    assert any("listeners[2].tls.hsts: has no effect with mode: local-http" in p for p in found)


def test_bad_values_name_the_value() -> None:
    text = REFERENCE.replace("email: ops@gw.test", "email: nobody").replace(
        "directory: https://127.0.0.1:14000/dir", "directory: http://127.0.0.1:14000/dir"
    )
    found = errors(text)
    assert any("'http://127.0.0.1:14000/dir' is not an https:// URL" in p for p in found)
    assert any("'nobody' is not an e-mail address" in p for p in found)
    [problem] = errors(REFERENCE.replace("hostnames: [gw.lan]", "hostnames: [gw_lan]"))
    assert "listeners[1].tls.hostnames[0]: 'gw_lan' is not a DNS name" in problem
    found = errors(REFERENCE.replace("challenge: http-01", "challenge: tls-alpn-01"))
    assert "'tls-alpn-01' is not valid" in found[0] and "http-01" in found[0]


def test_side_ports_must_not_collide_with_listeners_or_each_other() -> None:
    text = REFERENCE.replace("http_port: 5002", "http_port: 8444")
    [problem] = errors(text)
    assert "acme.http_port: 127.0.0.1:8444 is also the address of listeners[1] (lan)" in problem
    redirects = REFERENCE.replace(
        "tls: {mode: packaged-ca, hostnames: [gw.lan]}",
        "tls: {mode: packaged-ca, hostnames: [gw.lan], redirect_http: {bind: '127.0.0.1:8080'}}",
    ).replace(
        "tls: {mode: dev-selfsigned, hostnames: [localhost]}",
        "tls: {mode: dev-selfsigned, redirect_http: {bind: '0.0.0.0:8080'}}",
    )
    [problem] = errors(redirects)
    assert (
        "listeners[2].tls.redirect_http: 0.0.0.0:8080 already redirects for listeners[1]" in problem
    )


def test_redirect_shares_the_acme_port_by_default() -> None:
    text = REFERENCE.replace(
        "        http_port: 5002\n", "        http_port: 5002\n      redirect_http: {}\n"
    )
    parse_config(text, environ={})  # one side server answers challenges and redirects


def test_rfc2136_needs_a_whole_tsig_key() -> None:
    text = REFERENCE.replace("challenge: http-01", "challenge: dns-01").replace(
        "        http_port: 5002\n",
        "        dns: {rfc2136: {server: '127.0.0.1:53', zone: gw.test, key_name: k}}\n",
    )
    [problem] = errors(text)
    assert "acme.dns.rfc2136: set both key_name and key_secret for TSIG, or neither" in problem
    bad = text.replace("key_name: k", "key_name: k, key_secret: 'not base64!'")
    [problem] = errors(bad)
    assert "key_secret: is not base64 (the secret itself is not shown)" in problem
    assert "not base64!" not in problem


def test_eab_takes_a_key_id_and_a_base64url_hmac_key_never_echoed() -> None:
    good = REFERENCE.replace(
        "        http_port: 5002\n",
        '        http_port: 5002\n        eab: {key_id: kid-1, hmac_key: "${EAB}"}\n',
    )
    config, _ = parse_config(good, environ={"EAB": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG4"})
    acme = config.listeners[0].tls.acme
    assert acme is not None and acme.eab is not None and acme.eab.key_id == "kid-1"
    assert "zWNDZM6" not in repr(config)
    bad = good.replace('"${EAB}"', '"s3cret+not/base64url!"')
    assert errors(bad) == [
        "flm.yaml:13:40: listeners[0].tls.acme.eab.hmac_key: hmac_key is not base64url"
    ]
    assert any("eab.key_id" in e for e in errors(bad.replace("key_id: kid-1, ", "")))
