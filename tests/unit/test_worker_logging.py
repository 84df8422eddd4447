"""The worker keeps the root logger at the level it was started with (agents.app.StreamprocWorker)."""

from __future__ import annotations

import logging

import pytest

from agents.app import StreamprocWorker, app


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield root
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.mark.parametrize("level", [logging.WARNING, logging.ERROR, logging.INFO])
def test_the_worker_does_not_lower_the_root_logger_for_a_spinner(root_logger, level) -> None:
    # Faust's own worker sets the root logger to DEBUG at WARNING and above, for its terminal spinner: every library
    # debug call would then build a record the console handler drops.
    root_logger.handlers[:] = [logging.StreamHandler()]
    root_logger.setLevel(level)
    worker = StreamprocWorker(app, loglevel=level, console_port=0)
    worker.on_setup_root_logger(root_logger, level)
    assert root_logger.level == level and not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
    assert worker.spinner is None and len(root_logger.handlers) == 1


def test_both_ways_of_starting_the_worker_use_it() -> None:
    assert app.conf.Worker is StreamprocWorker  # `faust -A agents.app worker`; `streamproc worker` builds it directly
