"""The gateway's own small HTTP/1.1 client and server, on asyncio streams and h11.

Everything the gateway says over HTTP outside mitmproxy goes through here: the
client for health checks, model lists, fallback requests and the DNS webhook
(`client`), the server for the admin listener and the plain-HTTP side server
of ACME challenges and redirects (`server`). h11 is mitmproxy's own HTTP/1
parser, already in memory; a general-purpose HTTP library (aiohttp) would add
about 10 MiB to the idle gateway for a handful of simple requests.
"""
