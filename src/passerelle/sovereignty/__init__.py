"""Sovereignty: where a call's data may go (data classes and jurisdictions), and the proof of it."""
