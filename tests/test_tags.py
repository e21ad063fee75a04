"""Tags → colour and version, and the release ids made from them.

Covers the seed's patterns (`^v.*-blue$` / `^v.*-green$`), tags matching neither or
both patterns (not ours: None), custom patterns with a `version` group, `read_tag`
(the intake's colour and version in one search) agreeing with both, names Git would
not allow for a tag (no colour, whatever the patterns say), and that release ids are
valid rq job ids and Kubernetes label values.
"""

from __future__ import annotations

import re

import pytest

from worker.colors import Color, color_for_tag, read_tag, version_for_tag
from worker.config import load_settings
from worker.refnames import why_not_a_tag
from worker.releases import new_release_id

SEED = {Color.BLUE: re.compile("^v.*-blue$"), Color.GREEN: re.compile("^v.*-green$")}


@pytest.mark.parametrize(("tag", "color", "version"), [
    ("v2.0-green", Color.GREEN, "v2.0"),
    ("v1.2.3-blue", Color.BLUE, "v1.2.3"),
    ("v10-rc.1-green", Color.GREEN, "v10-rc.1"),
    ("v2.0", None, "v2.0"),
    ("2.0-green", None, "2.0"),          # the seed's patterns want a leading v
    ("v2.0-green-hotfix", None, "v2.0-green-hotfix"),
    ("v2.0-Green", None, "v2.0"),        # patterns are case-sensitive, as the seed's regex
    ("", None, ""),
])
def test_seed_patterns(tag: str, color: Color | None, version: str) -> None:
    assert color_for_tag(SEED, tag) is color
    assert version_for_tag(SEED, tag) == version
    assert read_tag(SEED, tag) == (None if color is None else (color, version))


def test_a_tag_matching_both_patterns_names_no_colour() -> None:
    both = {Color.BLUE: re.compile("^v"), Color.GREEN: re.compile("-green$")}
    assert color_for_tag(both, "v2.0-green") is None
    assert color_for_tag(both, "x-green") is Color.GREEN


def test_a_version_group_in_the_pattern_wins() -> None:
    patterns = {Color.BLUE: re.compile(r"^release/(?P<version>[\d.]+)/b$"),
                Color.GREEN: re.compile(r"^release/(?P<version>[\d.]+)/g$")}
    assert color_for_tag(patterns, "release/4.1/g") is Color.GREEN
    assert version_for_tag(patterns, "release/4.1/g") == "4.1"
    assert read_tag(patterns, "release/4.1/g") == (Color.GREEN, "4.1")


@pytest.mark.parametrize(("tag", "why"), [
    ("v2.0-green\n", "contains '\\n'"), ("v2.0-green\x00", "contains '\\x00'"),
    ("v2.0\t-green", "contains '\\t'"), ("v2.0 -green", "contains ' '"),
    ("v2.0\x7f-green", "contains '\\x7f'"), ("v2~1-green", "contains '~'"),
    ("v2^-green", "contains '^'"), ("v2:0-green", "contains ':'"),
    ("v2?-green", "contains '?'"), ("v2*-green", "contains '*'"),
    ("v2[0]-green", "contains '['"), ("v2\\0-green", "contains '\\\\'"),
    ("v2..0-green", "contains '..'"), ("v2@{0}-green", "contains '@{'"),
    ("v/2//x-green", "contains '//'"), ("/v2-green", "begins or ends with '/'"),
    ("v2-green/", "begins or ends with '/'"), ("v2-green.", "ends with '.'"),
    ("v2/.x-green", "part '.x-green' begins with '.'"),
    ("v2-green.lock", "part 'v2-green.lock' ends with '.lock'"), ("", "it is empty"),
])
def test_a_name_git_would_not_allow_names_no_colour(tag: str, why: str) -> None:
    assert why in (why_not_a_tag(tag) or "")
    anything = {Color.BLUE: re.compile("blue"), Color.GREEN: re.compile("")}
    assert read_tag(SEED, tag) is None and read_tag(anything, tag) is None
    assert color_for_tag(anything, tag) is None


@pytest.mark.parametrize("tag", ["v2.0-green", "release/4.1/g", "ü-blue", "v1.0@2-green",
                                 "v.2-green", "-v2-green", "a.lock.b-green", "@"])
def test_names_git_allows(tag: str) -> None:
    """As `git check-ref-format refs/tags/<tag>` answers (the whole ref may not be '@')."""
    assert why_not_a_tag(tag) is None


def test_app_config_applies_its_patterns() -> None:
    app = load_settings({}).apps["myapp"]
    assert app.color_for_tag("v2.0-green") is Color.GREEN
    assert app.version_for_tag("v2.0-green") == "v2.0"


def test_colours() -> None:
    assert Color.BLUE.other() is Color.GREEN and Color.GREEN.other() is Color.BLUE
    assert Color.parse(" Green ") is Color.GREEN
    assert str(Color.BLUE) == "blue"
    with pytest.raises(ValueError, match="not a colour: 'red'"):
        Color.parse("red")


@pytest.mark.parametrize("tag", ["v2.0-green", "V2.0_Green!", "release/x/y", "v" + "9" * 200,
                                 "...", "ü-blue"])
def test_release_ids_are_job_ids_and_label_values(tag: str) -> None:
    app = "a" * 40
    ids = {new_release_id(app, tag) for _ in range(20)}
    assert len(ids) == 20
    for release_id in ids:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", release_id), release_id
        assert len(release_id) <= 63
        assert release_id.startswith(app + "-")


def test_release_id_reads_like_the_tag() -> None:
    assert re.fullmatch(r"myapp-v2-0-green-[0-9a-f]{8}", new_release_id("myapp", "v2.0-green"))
