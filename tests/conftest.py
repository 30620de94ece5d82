"""Fixtures shared by every test directory."""

from __future__ import annotations

import pytest

from tests.procs import ProcessGroup


@pytest.fixture
def processes(tmp_path):
    """Creates `python -m ledgermq ...` server processes; kills all of them (kill -9) at
    teardown, also when the test failed before reaching its own cleanup."""
    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        group.kill_all()
