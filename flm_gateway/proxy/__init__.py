"""What the gateway's mitmproxy glue shares: the flow's API kinds (more of the flow
metadata moves here with issue 13)."""
