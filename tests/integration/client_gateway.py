"""The gateway that third-party clients are tested against: the fake upstream behind it, a chat
model, an embedding model, a text model, and a tenant whose budget refuses every call (a 429)."""

from __future__ import annotations

from typing import Any

from tests.fakes.gateway import fake_upstream_config

THRIFTY_KEY = "sk-test-thrifty"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "minLength": 5}},
            "required": ["city"],
        },
    },
}


def client_gateway_config(upstream_url: str) -> dict[str, Any]:
    config = fake_upstream_config(upstream_url)
    config["tenants"].append(
        {
            "name": "thrifty",
            "keys": ["env:THRIFTY_KEY"],
            "budgets": [{"usd": 0.0000001, "period": "month"}],
        }
    )
    return config


CLIENT_ENV = {"THRIFTY_KEY": THRIFTY_KEY}
