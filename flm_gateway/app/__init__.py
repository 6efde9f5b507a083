"""The composition root: the gateway process, its addon pipeline, hot reload, logging and
the checks behind `flm-gateway check`. Nothing below `app/` imports it."""
