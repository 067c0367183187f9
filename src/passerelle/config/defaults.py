"""The embedded default: what ``passerelle serve`` runs with no configuration file.

A SQLite ledger in ``./passerelle-data/``, the shipped Gemma 3 270M model served in-process by
llama.cpp as model ``local``, one tenant ``default``, and an admin token kept in
``./passerelle-data/admin-token``. No key to bring, no network.
"""

from __future__ import annotations

DATA_DIR = "passerelle-data"

EMBEDDED = """
admin_token: file:./passerelle-data/admin-token
store: sqlite:///./passerelle-data/ledger.db
providers:
  - name: embedded
    kind: local
    model: gemma-3-270m
    jurisdiction: self-hosted
models:
  - name: local
    targets:
      - provider: embedded
        upstream_model: gemma-3-270m
        price: {input: 0.0, output: 0.0}
tenants:
  - name: default
"""
