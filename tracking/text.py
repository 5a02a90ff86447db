"""User text (study names, descriptions, trial names) made inert in Markdown and HTML.

Reports and MLflow's notes render Markdown, which passes HTML through: a study
named ``<img src=x onerror=alert(1)>`` would run script in whoever opens it,
and a name holding ``*`` or ``[`` would format or link. Here `tracking` holds
the one escaper, since `analysis` imports `tracking` and not the other way.
"""

from __future__ import annotations

import re

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Always active in CommonMark/GFM: escapes, code, emphasis, links, headings, tables, strikes.
_ACTIVE = re.compile(r"[\\`*\[\]#|~]")
# "_" emphasises only at a word's edge (CommonMark has no intraword "_" emphasis).
_EDGE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
# What starts a block at a line's start: a list item ("-", "+", "1.", "1)") or a setext underline.
_LINE_START = re.compile(r"^([ \t]*)([-+=]|\d+(?=[.)]))", re.MULTILINE)


def escape_markdown(text: str) -> str:
    """`text` shown as written by a Markdown renderer, with no HTML, formatting or links.

    ``&``, ``<`` and ``>`` become HTML entities; Markdown's active characters get a
    backslash where they could start formatting. Words, digits, spaces, ``-`` and
    ``.`` inside a line read as they are.
    """
    text = re.sub(r"[&<>]", lambda match: _ENTITIES[match.group()], str(text))
    text = _ACTIVE.sub(lambda match: "\\" + match.group(), text)
    text = _EDGE_UNDERSCORE.sub(r"\\_", text)

    def block_start(match: re.Match) -> str:
        indent, marker = match.groups()
        if marker.isdigit():  # "1." -> "1\." (the marker is the punctuation after the digits)
            return indent + marker + "\\"
        return f"{indent}\\{marker}"

    return _LINE_START.sub(block_start, text)
