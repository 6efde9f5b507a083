"""The mitmproxy glue: the HTTP layer made strict (`mitm_http1`), failover inside its
stream, listeners as mitmproxy servers, the addon chain, the runtime every addon shares,
and the flow's API kinds."""
