"""The dependency policy: `make test-oldest` installs exactly the lower bounds pyproject.toml declares."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent


def requirement_lines(name: str) -> list[Requirement]:
    lines = (ROOT / name).read_text().splitlines()
    return [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]


def pinned(requirement: Requirement) -> Version:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement}: pinned with =="
    return Version(specifier.version)


def test_the_oldest_pins_are_pyprojects_lower_bounds():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lower_bounds = {}
    for requirement in map(Requirement, declared):
        floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert len(floors) == 1, f"{requirement}: one lower bound"
        lower_bounds[canonicalize_name(requirement.name)] = floors[0]
    oldest = {canonicalize_name(r.name): pinned(r) for r in requirement_lines("requirements-oldest.txt")}
    # torch (and torchvision) come from requirements-dev.txt in both environments.
    development = {canonicalize_name(r.name) for r in requirement_lines("requirements-dev.txt")}
    assert oldest == {name: floor for name, floor in lower_bounds.items() if name not in development}
