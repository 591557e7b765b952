"""Load a python-backend template (templates/python/*.py) as a module for a unit test."""

import importlib.util
import sys
from types import ModuleType

from tuner.resources import ADAPTER_DIR


def load_template(filename: str, module_name: str) -> ModuleType:
    """templates/python/`filename` as a module named `module_name` (each test file its own name, so
    none shares another's module state); the templates' folder goes on sys.path first, because the
    templates import their helper `tuner_adapter` by name, as the server's python backend does."""
    if str(ADAPTER_DIR) not in sys.path:
        sys.path.insert(0, str(ADAPTER_DIR))
    spec = importlib.util.spec_from_file_location(module_name, ADAPTER_DIR / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
