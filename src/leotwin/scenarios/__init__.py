"""Bundled scenarios: one directory per scenario holding ``scenario.yaml`` and its policy files.

``bundled_scenario("ukraine-2022-10")`` is the path of the flagship scenario file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["bundled_scenario", "bundled_scenarios"]


def _root() -> Path:
    return Path(str(resources.files("leotwin.scenarios")))


def bundled_scenarios() -> list[str]:
    """Names of the bundled scenarios."""
    return sorted(p.name for p in _root().iterdir() if (p / "scenario.yaml").is_file())


def bundled_scenario(name: str) -> Path:
    """Path of a bundled scenario's ``scenario.yaml``."""
    path = _root() / name / "scenario.yaml"
    if not path.is_file():
        raise KeyError(f"unknown bundled scenario {name!r}; known: {bundled_scenarios()}")
    return path
