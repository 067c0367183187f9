"""Budgets and rate limits: what a call may spend, held exactly, in one process or across many."""
