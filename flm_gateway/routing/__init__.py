"""Routing: which engine gets a request, and the request rewritten for it (the pure parts;
the `routing` and `failover` addons call them)."""
