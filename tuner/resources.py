"""Where the files that ship with tuner live: config templates, python-backend adapters, the dashboard.

One place, so the package finds them the same way from a checkout and from a `pip install .`.
The checkout keeps them in the top-level templates/ and dashboard/ folders; pyproject.toml maps
those to the packages tuner.templates and tuner.dashboard, so both install modes (editable, which
points at the checkout's folders, and regular, which copies them into site-packages) find them
through the import system.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _package_dir(package: str) -> Path:
    try:
        return Path(str(files(package)))
    except ModuleNotFoundError:
        # A checkout used through PYTHONPATH without installing it (the GPU machines, which have
        # no network to install from): the folder the package maps, beside tuner/.
        return Path(__file__).resolve().parents[1] / package.removeprefix("tuner.")


TEMPLATES_DIR = _package_dir("tuner.templates")  # config.pbtxt jinja2 templates
ADAPTER_DIR = TEMPLATES_DIR / "python"  # python-backend model.py files (runtime adapters)
DASHBOARD_APP = _package_dir("tuner.dashboard") / "app.py"  # the Streamlit app `tuner dashboard` serves
