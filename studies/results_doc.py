# SPDX-License-Identifier: GPL-3.0-or-later
"""docs/results.md is shared by the studies: each replaces only the body of its own section."""
from __future__ import annotations

from pathlib import Path

RESULTS_MD = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def write_section(title: str, body: str, path: Path = RESULTS_MD) -> None:
    """Replace the body of one section (from its header to the next '## '), keeping the header and its
    owner comment; the other sections stay as they are on disk now."""
    text = path.read_text()
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    end = len(text) if end < 0 else end + 1
    header = text[start:end].splitlines()[:2]
    keep = "\n".join(h for h in header if h.startswith(title) or h.startswith("<!--"))
    path.write_text(text[:start] + keep + "\n\n" + body.rstrip() + "\n\n" + text[end:].lstrip("\n"))
