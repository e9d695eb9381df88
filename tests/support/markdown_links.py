"""Relative links in Markdown files and the anchors they point at, as GitHub renders them.

Pure functions over text (no network), used by tests/unit/test_docs.py to keep README.md and docs/ linked
correctly after sections move between files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[`~]*[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# [text](target) and ![alt](target); text may hold one level of brackets and span lines.
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class Link:
    """A link found in a Markdown file: where it is, and what it points at."""

    source: Path
    line: int
    target: str


def _blank(match: re.Match[str]) -> str:
    # Keep newlines so that line numbers of later links stay right.
    return re.sub(r"[^\n]", " ", match.group(0))


def _without_code(text: str) -> str:
    """The text with code blocks, code spans and comments blanked out: links inside them are not links."""
    text = _FENCE.sub(_blank, text)
    text = _HTML_COMMENT.sub(_blank, text)
    return _CODE_SPAN.sub(_blank, text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lowercase, no punctuation, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags go
    text = text.replace("`", "").lower()
    # GitHub keeps letters, digits, underscores, hyphens and spaces (Unicode-aware), then spaces → hyphens.
    text = "".join(ch for ch in text if ch.isalnum() or ch in "_- ")
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown document defines: its headings' slugs (repeats numbered) and HTML anchors."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in _ATX_HEADING.finditer(_FENCE.sub(_blank, text)):
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    found.update(_HTML_ANCHOR.findall(text))
    return found


def links(path: Path) -> Iterator[Link]:
    """The links of one Markdown file that point inside the repository (no scheme: not http, not mailto)."""
    text = _without_code(path.read_text())
    matches = [*_INLINE_LINK.finditer(text), *_REFERENCE_DEFINITION.finditer(text)]
    for match in sorted(matches, key=lambda m: m.start()):
        target = match.group(1).strip("<>")
        if not _SCHEME.match(target):
            yield Link(path, text.count("\n", 0, match.start()) + 1, target)


def broken(link: Link) -> str | None:
    """Why the link does not resolve (a sentence naming it), or None when it does."""
    where = f"{link.source}:{link.line}: {link.target}"
    file_part, _, fragment = link.target.partition("#")
    target = (link.source.parent / file_part).resolve() if file_part else link.source
    if not target.exists():
        return f"{where}: no such file {target}"
    if not fragment:
        return None
    if target.is_dir() or target.suffix.lower() != ".md":
        return f"{where}: an anchor into {target.name}, which is not a Markdown file"
    if fragment.lower() not in anchors(target.read_text()):
        return f"{where}: {target.name} has no heading with the anchor #{fragment}"
    return None
