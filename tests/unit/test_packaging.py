"""Every subpackage of tuner is listed in pyproject.toml (the list is explicit: mapped packages
cannot come from packages.find), so a non-editable install ships all of it."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_tuner_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "tuner").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
