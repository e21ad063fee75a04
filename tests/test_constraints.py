"""constraints.txt, the versions `make` installs, against pyproject.toml's ranges.

Every dependency the project names (its own and its dev extra) is pinned to one exact
version, within the range pyproject.toml gives, so a fresh machine installs the set the
suite passed with; and the installed environment is that set (a version that differs is
one `make` did not install, so the suite would not be testing what CI and users get).
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def pins(text: str) -> dict[str, str]:
    """`name==version` lines as {canonical name: version}; a line of any other form is
    refused rather than skipped."""
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or requirement.marker:
            raise ValueError(f"line {number} is not an exact pin: {line!r}")
        name = canonicalize_name(requirement.name)
        if name in found:
            raise ValueError(f"line {number} pins {name} again")
        found[name] = specifiers[0].version
    return found


def named_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    return [Requirement(text) for text in declared]


PINS = pins((ROOT / "constraints.txt").read_text())


@pytest.mark.parametrize("requirement", named_requirements(), ids=str)
def test_each_dependency_is_pinned_within_its_range(requirement: Requirement) -> None:
    name = canonicalize_name(requirement.name)
    assert name in PINS, f"{requirement.name} is not in constraints.txt: run `make lock`"
    assert requirement.specifier.contains(PINS[name], prereleases=True), (
        f"constraints.txt pins {name}=={PINS[name]}, outside pyproject.toml's "
        f"{requirement}: run `make lock`")


def test_the_environment_is_the_pinned_set() -> None:
    installed = {canonicalize_name(d.metadata["Name"]): d.version
                 for d in metadata.distributions()}
    differing = {name: (version, installed.get(name)) for name, version in PINS.items()
                 if installed.get(name) != version}
    assert not differing, (
        f"installed versions differ from constraints.txt (pinned, installed): {differing}; "
        "`make` installs the pinned ones")


@pytest.mark.parametrize("line", ["redis>=5", "redis", "redis==8.1.0; python_version<'3'"])
def test_a_line_that_is_not_an_exact_pin_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match="not an exact pin"):
        pins(f"# comment\n{line}\n")


def test_a_name_pinned_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="pins redis again"):
        pins("redis==8.1.0\nRedis==8.0.0\n")
