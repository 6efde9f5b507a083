"""Observability: what the gateway tells about itself: outcomes and the flow summary,
Prometheus metrics and their exposition, readiness, memory, and the admin listener."""
