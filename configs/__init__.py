"""The shipped recipes (YAML), installed as package data and read with importlib.resources so
they are found in a wheel install as well as in the checkout."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def packaged(name: str) -> Path:
    """The path of a shipped recipe, e.g. `packaged("demo.yaml")` or `packaged("prompts/densefusion.yaml")`."""
    return Path(str(resources.files(__name__).joinpath(name)))
