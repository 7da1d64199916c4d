"""Shared fixtures: `host` is a fresh simulated machine per test (see tests/sandbox.py)."""

from __future__ import annotations

import pytest

from tests.sandbox import Host, have_root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if have_root():
        return
    for item in items:
        if item.get_closest_marker("privileged"):
            item.add_marker(pytest.mark.skip(reason="needs root, unshare and nft (run the README's test command as root)"))


@pytest.fixture
def host() -> Host:
    with Host() as h:
        yield h
