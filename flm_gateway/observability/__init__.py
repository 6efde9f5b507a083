"""Observability: what the gateway tells about itself (readiness; metrics, the flow
summary and the admin listener move here with issue 13's layout)."""
