"""Every setting is documented in docs/configuration.md."""

from pathlib import Path

from streamproc.config import Settings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()


def test_every_setting_is_documented():
    missing = [name for name in Settings.model_fields if f"STREAMPROC_{name.upper()}" not in DOC]
    assert missing == [], f"document these in docs/configuration.md: {missing}"
