"""The optional extra ``pii``: needed only when a data class looks for personal data."""

from __future__ import annotations

import subprocess
import sys

import pytest

from passerelle.errors import ConfigError
from passerelle.sovereignty.pii import Detector


def test_the_gateway_imports_neither_presidio_nor_spacy_until_asked() -> None:
    code = (
        "import sys, passerelle.gateway, passerelle.cli.main; "
        "print(sorted(m for m in ('spacy', 'presidio_analyzer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_without_the_extra_the_detector_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "spacy", None)  # as where the extra is not installed
    with pytest.raises(ConfigError, match=r"optional extra 'pii': pip install 'passerelle\[pii\]'"):
        Detector()
