"""Proxy overhead benchmark: direct to a fake engine vs nginx vs flm-gateway, in one run.

`python -m bench` (or `bench/run.sh`) starts a fake vLLM engine, nginx in front of it
and flm-gateway in front of it, measures each side by side and prints Markdown tables;
`python -m bench.profile` samples the gateway under load with py-spy. See
docs/performance.md for the method, the targets and the latest results.
"""
