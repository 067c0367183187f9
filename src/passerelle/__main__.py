"""``python -m passerelle``: the same as the ``passerelle`` command."""

from passerelle.cli.main import main

main()
