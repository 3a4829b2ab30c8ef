"""What `pip install .` (not editable) puts in site-packages: every package and its data."""

from __future__ import annotations

import tomllib

from paths import REPO


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]


def test_every_package_under_probe_is_installed():
    folders = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "probe").rglob("__init__.py")
    }
    listed = set(_setuptools()["packages"])
    assert folders - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_shipped_data_files_are_package_data():
    data = _setuptools()["package-data"]
    nltk = [f for f in (REPO / "probe" / "nltk_data").rglob("*") if f.is_file()]
    assert nltk and all(
        any(f.relative_to(REPO / "probe").match(pattern) for pattern in data["probe"]) for f in nltk
    )
    templates = [f for f in (REPO / "probe" / "report" / "templates").rglob("*") if f.is_file()]
    assert templates and all(
        any(f.relative_to(REPO / "probe" / "report").match(p) for p in data["probe.report"])
        for f in templates
    )
