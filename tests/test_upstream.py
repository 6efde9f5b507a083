"""`upstream.point_at` and `strip_client_credentials`: what leaves for the engine."""

from __future__ import annotations

from mitmproxy.test import tutils

from flm_gateway.upstream import strip_client_credentials


def test_every_client_credential_goes_in_any_case_and_the_rest_keeps_its_order() -> None:
    request = tutils.treq()
    request.headers.fields = (
        (b"Host", b"127.0.0.1:9"),
        (b"AUTHORIZATION", b"Bearer client"),
        (b"X-Trace", b"1"),
        (b"cookie", b"a=1"),
        (b"Cookie", b"b=2"),
        (b"x-api-key", b"k"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"Accept", b"*/*"),
    )
    strip_client_credentials(request)
    assert request.headers.fields == (
        (b"Host", b"127.0.0.1:9"),
        (b"X-Trace", b"1"),
        (b"Accept", b"*/*"),
    )


def test_headers_without_credentials_are_left_alone() -> None:
    request = tutils.treq()
    before = request.headers.fields
    strip_client_credentials(request)
    assert request.headers.fields is before
