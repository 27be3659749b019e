"""Routing and latency: per-step graphs, shortest paths from every PoP, terminal service."""
