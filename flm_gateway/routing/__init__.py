"""Routing: which engines may serve a model (`table`), the candidates in order, sending a
flow to one (`upstream`) and the request rewritten for it (`rewrite`). The pure parts;
the `model_routing` and `failover` addons call them."""
