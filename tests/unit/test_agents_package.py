"""The agents package: no import loop, Faust driver fixes wired as subclasses, a loud version check."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

AGENT_MODULES = {"agents.calls", "agents.detection", "agents.audio", "agents.summaries", "agents.dashboard", "agents.web"}


def _imported_after(statement: str) -> set[str]:
    probe = f"import sys; {statement}; print(' '.join(sorted(m for m in sys.modules if m.startswith('agents'))))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return set(result.stdout.split())


def test_app_and_topics_do_not_import_the_agent_modules():
    imported = _imported_after("import agents.topics")
    assert "agents.app" in imported and not imported & AGENT_MODULES, imported


def test_the_worker_discovers_every_agent_module():
    from agents.app import AGENT_MODULES as listed

    assert set(listed) == AGENT_MODULES
    imported = _imported_after("from agents.app import app; app.discover()")
    assert AGENT_MODULES <= imported, imported


def test_the_app_builds_its_consumer_from_the_fix_subclasses():
    from agents import compat
    from agents.app import app

    assert type(app.transport) is compat.Transport
    assert app.transport.Consumer is compat.Consumer
    assert app.driver_fixes == compat.DriverFixes()  # every fix on by default


def test_an_untested_faust_version_fails_loudly_unless_allowed(caplog):
    from agents import compat

    compat.check_versions()  # the installed versions are the tested ones
    untested = {"faust-streaming": "0.99.0", "aiokafka": compat.aiokafka.__version__}
    with pytest.raises(compat.UntestedFaustVersion, match=r"faust-streaming 0\.99\.0 .*STREAMPROC_ALLOW_UNTESTED_FAUST"):
        compat.check_versions(installed=untested)
    compat.check_versions(installed=untested, allow_untested=True)
    assert "starting anyway" in caplog.text


def test_the_app_refuses_to_start_on_an_untested_version(monkeypatch):
    from agents import compat
    from agents.app import StreamprocApp

    monkeypatch.setattr(compat.faust, "__version__", "0.16.0")
    with pytest.raises(compat.UntestedFaustVersion):
        StreamprocApp("version-probe")
