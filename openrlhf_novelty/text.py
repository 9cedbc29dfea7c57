"""Turning what a host hands us (a query, a response with template residue) into the text that gets judged."""

from __future__ import annotations

import re
from functools import lru_cache


def response_from_query(query: str, prompt: str) -> str:
    """OpenRLHF passes ``query`` = prompt + response (special tokens kept); the response is what follows the prompt.

    When the prompt is not a prefix (a tokenizer round trip changed whitespace, say), fall back to the text after
    the prompt's last occurrence, and failing that the whole query: a reward must never depend on an exact match.
    """
    if prompt and query.startswith(prompt):
        return query[len(prompt):]
    if prompt and prompt in query:
        return query[query.rindex(prompt) + len(prompt):]
    return query


def clean_text(text: str, strip_tokens: list[str] | tuple[str, ...]) -> str:
    """Remove special-token residue and make the string safe to encode (lone surrogates become "?")."""
    for tok in strip_tokens:
        if tok and tok in text:
            text = text.replace(tok, " ")
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.strip()


@lru_cache(maxsize=32)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def extract(text: str, pattern: str, fallback: str = "whole") -> tuple[str, bool]:
    """The part of ``text`` selected by ``pattern`` and whether the pattern matched.

    Group 1 is used when the pattern has a group, else the whole match; the first match wins (prefix the pattern
    with (?s) to let `.` span lines). With no pattern the whole text is used and counts as matched.
    """
    if not pattern:
        return text, True
    m = _compiled(pattern).search(text)
    if m is None:
        return (text if fallback == "whole" else ""), False
    picked = m.group(1) if m.re.groups else m.group(0)
    return (picked or "").strip(), True
