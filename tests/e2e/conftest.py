"""End-to-end tests: the CLI, whole audits, notebooks and a browser. All marked slow, so
``pytest -m "not slow"`` is the quick unit + integration run."""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/e2e/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.slow)
