"""Passerelle: an OpenAI-compatible LLM gateway that meters every call and keeps vendors sovereign."""

__version__ = "0.1.0"
