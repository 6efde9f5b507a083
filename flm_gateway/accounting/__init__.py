"""Accounting: token counts from what engines send (or estimated), and the chunk filters
several addons share on one streamed response."""
