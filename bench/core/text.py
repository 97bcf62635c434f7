"""Text from result files made safe to show: the one function every printer of such text uses.

A result file is written by whoever submits it, so a word, an evidence line, a task, explainer or
metric name may carry characters that change what a reader sees without being visible themselves:
bidirectional controls that reverse the order of the text after them (a name that reads "oracle"
but is stored "elcaro"), zero-width characters that make two different names look identical, and
control characters (C0 and C1, among them the ANSI escape sequences that recolour or rewrite a
terminal). `display_text` removes them all; with `markdown=True` it also escapes HTML special
characters, table pipes and backticks, so a value cannot inject markup into a Markdown table.
HTML pages escape separately (fexbench.report.markup) after calling this function.

The site, summary.md, the terminal tables (fexbench.report.leaderboard.clean) and `fexbench
compare` all go through here, so the set of removed characters is the same everywhere.
"""
from __future__ import annotations

import html
import re

# ANSI escape sequences: CSI (ESC [ ... final, or the one-byte C1 CSI), OSC (ESC ] ... BEL or ST)
# and two-character escapes; removed whole so no "[31m" residue is left behind.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
                   r"|\x1b[@-Z\\-_]")
# Bidirectional controls (embeddings, overrides, isolates, marks, the Arabic letter mark) and
# zero-width characters (space, non-joiner, joiner, word joiner, the byte order mark): removed.
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
_INVISIBLE = re.compile(f"[{BIDI}{ZERO_WIDTH}]")
# C0 and C1 control characters and DEL, and the Unicode line and paragraph separators: a space,
# so a newline in a name cannot break a table row and two words stay two words.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def display_text(value: object, markdown: bool = False) -> str:
    """`value` as a string that shows what it holds: ANSI escape sequences, bidirectional controls
    and zero-width characters removed, other control characters turned into spaces; with
    `markdown`, also `&<>"'`, `|` and a backtick escaped for a Markdown table."""
    text = _ANSI.sub("", str(value))
    text = _INVISIBLE.sub("", text)
    text = _CONTROL.sub(" ", text)
    if markdown:
        text = html.escape(text, quote=True).replace("|", "\\|").replace("`", "&#96;")
    return text
