"""The HTTP server: the OpenAI-compatible API, the admin API, and one error renderer."""
