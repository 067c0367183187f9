"""Prices and cost: a dated catalogue of list prices, and pure functions from usage to USD."""
