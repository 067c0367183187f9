"""Upstreams: one small protocol, and one module per wire format."""
