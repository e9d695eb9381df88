"""The documentation stays navigable and complete: every relative link and anchor in README.md, docs/ and
the clients' READMEs resolves, and docs/configuration.md documents every setting app/config.py reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import AliasChoices

from app.config import Settings
from tests.support.markdown_links import anchors, broken, github_slug, links

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "clients").glob("*/README.md")),
]
CONFIGURATION = ROOT / "docs" / "configuration.md"
# Documented in the configuration table but read by something other than app.config.
NOT_SETTINGS = {"TEST_DATABASE_URL"}


def environment_names() -> dict[str, str]:
    """Each setting's environment variable, as pydantic-settings derives it → the field's name."""
    prefix = Settings.model_config.get("env_prefix", "")
    names: dict[str, str] = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, AliasChoices):
            # The first choice is the name to document; the others are accepted spellings.
            alias = next(choice for choice in alias.choices if isinstance(choice, str))
        # An alias replaces the name whole (no prefix); names are case-insensitive: documented upper case.
        env_name = alias if isinstance(alias, str) else f"{prefix}{field_name}"
        names[env_name.upper()] = field_name
    return names


def documented_variables() -> set[str]:
    """The `VARIABLE`s in the first column of docs/configuration.md's tables (`HOST` / `PORT` rows too)."""
    names: set[str] = set()
    for line in CONFIGURATION.read_text().splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[1]))
    return names


def test_markdown_finds_links_and_anchors() -> None:
    assert DOCUMENTS[0].exists() and len(DOCUMENTS) > 5, "README.md and docs/*.md are where they belong"
    assert sum(1 for document in DOCUMENTS for _ in links(document)) > 50, "links are found at all"


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Client → server", "client--server"),
        ("Filters, events and columns", "filters-events-and-columns"),
        ("Broadcast and presence (issue 9)", "broadcast-and-presence-issue-9"),
        ("`since` and [ids](x.md)", "since-and-ids"),
        ("REALTIME_POLL_GRACE", "realtime_poll_grace"),
    ],
)
def test_github_slug(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_checker_reports_what_is_broken(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Part two\n\n## Part two\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#part-two-1) [ok](#page) [ok](other.md) [web](https://example.com/x.md#y)\n"
        "`[not a link](gone.md)`\n\n```\n[nor this](gone.md)\n```\n"
        "[missing file](gone.md) [missing anchor](other.md#part-three)\n"
        "[self](#nowhere)\n[ref]: other.md#nope\n"
    )
    problems = [problem for link in links(page) if (problem := broken(link))]
    assert problems == [
        f"{page}:9: gone.md: no such file {tmp_path / 'gone.md'}",
        f"{page}:9: other.md#part-three: other.md has no heading with the anchor #part-three",
        f"{page}:10: #nowhere: page.md has no heading with the anchor #nowhere",
        f"{page}:11: other.md#nope: other.md has no heading with the anchor #nope",
    ]
    assert anchors((tmp_path / "other.md").read_text()) == {"other", "part-two", "part-two-1"}


def test_every_relative_link_and_anchor_resolves() -> None:
    problems = [problem for document in DOCUMENTS for link in links(document) if (problem := broken(link))]
    assert not problems, "broken links (fix the target or the anchor):\n" + "\n".join(problems)


def test_every_setting_is_documented() -> None:
    documented = documented_variables()
    missing = sorted(name for name in environment_names() if name not in documented)
    assert not missing, f"settings in app/config.py missing from {CONFIGURATION.name}'s table: {missing}"


def test_every_documented_variable_is_a_setting() -> None:
    stale = sorted(documented_variables() - environment_names().keys() - NOT_SETTINGS)
    assert not stale, f"{CONFIGURATION.name} documents variables app/config.py does not read: {stale}"
