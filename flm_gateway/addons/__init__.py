"""The gateway's policies, one mitmproxy addon per module; their order is in `pipeline`."""
