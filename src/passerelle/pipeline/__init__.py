"""The request pipeline: a per-request value (``Call``) flowing through a chain of stages."""
