"""Leaf helpers every layer may use, importing nothing else of flm-gateway: safe text,
host names, network sets, path forms, severities and the gateway's own error bodies."""
