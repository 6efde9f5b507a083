"""Public names: which names a client can ask for to reach a model on an engine."""

from __future__ import annotations

from flm_gateway.config.route_settings import RouteConfig
from flm_gateway.routing.table import RoutingTable

ROUTES = [
    RouteConfig(model="fast", engine="box", upstream_model="tiny"),
    RouteConfig(model="chat", engine="gpu", upstream_model="big", fallback=["box"]),
    RouteConfig(model="safe", engine="gpu", fallback=[{"engine": "box", "upstream_model": "tiny"}]),
    RouteConfig(model="llama3*", engine="gpu"),
    RouteConfig(model="fast", engine="gpu"),  # shadowed by the first `fast`
]


def test_public_names() -> None:
    table = RoutingTable(ROUTES)
    assert table.public_names("box", "tiny") == ["tiny", "fast", "safe"]
    # routing asks a bare-name fallback for a model it serves (here: its first, tiny)
    first_listed = {"box": "tiny", "gpu": "big"}
    assert table.public_names("box", "tiny", (), lambda e, _: first_listed[e]) == [
        "tiny",
        "fast",
        "chat",
        "safe",
    ]
    assert table.public_names("gpu", "big") == ["big", "chat"]
    # a glob route sends llama3* to gpu: on box the id is not reachable by its name
    assert table.public_names("box", "llama3:8b") == []
    assert table.public_names("gpu", "llama3:8b") == ["llama3:8b"]
    # Ollama's implicit :latest: the alias matches a route's upstream name
    aliased = RoutingTable([RouteConfig(model="l", engine="o", upstream_model="llama3.2")])
    assert aliased.public_names("o", "llama3.2:latest", ("llama3.2",)) == ["llama3.2:latest", "l"]
