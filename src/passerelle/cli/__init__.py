"""The ``passerelle`` command: one module per command group."""
