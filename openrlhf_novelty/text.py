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


def split_reasoning(text: str, tags: list[str] | tuple[str, ...]) -> tuple[str, str, bool]:
    """(reasoning, final answer, closed) of a reasoning model's response ``<think>R</think>A`` (``tags``: the
    opening and closing tag). The reasoning ends at the *last* closing tag (a model may close twice; what follows
    the last one is what it answered). Without a closing tag the reasoning never ended (a truncated response): no
    reasoning, the text (opening tag removed) as the answer, and ``closed`` False."""
    opening, closing = tags
    at = text.rfind(closing)
    if at < 0:
        return "", text.replace(opening, " ", 1).strip(), False
    reasoning = text[:at]
    if opening in reasoning:
        reasoning = reasoning[reasoning.index(opening) + len(opening):]
    return reasoning.strip(), text[at + len(closing):].strip(), True


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


def clip_middle(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, its beginning and end kept (a long answer's conclusion is at its end)."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    return text[:head] + " [...] " + text[len(text) - (limit - head):]


@lru_cache(maxsize=1)
def _look_alikes() -> dict[int, str]:
    """Cyrillic, Greek, Armenian and Cherokee letters drawn like a Latin letter -> that letter (Unicode's
    confusables, from the confusable-homoglyphs package)."""
    from confusable_homoglyphs import categories, confusables

    table = {}
    for ch, entries in confusables.confusables_data.items():
        if len(ch) != 1 or categories.alias(ch) not in ("CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE", "COPTIC"):
            continue
        latin = next((e["c"] for e in entries if len(e["c"]) == 1 and e["c"].isascii() and e["c"].isalpha()), None)
        if latin:
            table[ord(ch)] = latin
    return table


_INVISIBLE = ("Cf", "Co", "Cs", "Cn", "So", "Sk")  # zero-width and format characters, private use, emoji / symbols
_EMPHASIS = re.compile(r"(?<!\w)(\*{1,3}|_{1,3}|~~|`)(?=\S)(.+?)(?<=\S)\1(?!\w)")
_LINE_MARKUP = re.compile(r"^[ \t]*(?:#{1,6}[ \t]+|>[ \t]?|[-*+\u2022][ \t]+)", re.MULTILINE)
_TAG = re.compile(r"</?[A-Za-z][^<>\n]{0,40}>")
# A leading score, list number, bullet or emoji run before the first letter ("9 ", "10/10 ", "1. ", "### **");
# a number followed by more arithmetic ("2*3 = 6") is content and stays.
_LEADING = re.compile(r"^(?:[^\w\s\\]+\s*)*(?:\d+(?:[.,:/]\d+)*%?[^\w\s\\]*\s+)?(?:[^\w\s\\]+\s*)*(?=[^\W\d_])")
_TRAILING = re.compile(r"[\s*_~#|]+$")


def surface_form(text: str) -> str:
    """The text with what costs a policy nothing and says nothing removed, so that a copy dressed up differently
    is the same text to the encoder, the judge and every check: Unicode compatibility forms (NFKC), look-alike
    letters from other scripts in Latin-script text, invisible characters, emoji and symbols, markdown and HTML
    markup, a leading score / number / bullet, runs of whitespace, and case (lower-cased: capitals are free)."""
    import unicodedata

    text = unicodedata.normalize("NFKC", text)
    letters = [ch for ch in text if ch.isalpha()]
    latin = sum(ch.isascii() or "LATIN" in unicodedata.name(ch, "") for ch in letters)
    if letters and latin * 2 >= len(letters):  # Latin-script text: other scripts' look-alikes are disguise
        text = text.translate(_look_alikes())
    text = "".join(" " if unicodedata.category(ch) in _INVISIBLE and ch not in "\u200b\u200c\u200d\u2060\ufeff"
                   else "" if unicodedata.category(ch) in _INVISIBLE or "\ufe00" <= ch <= "\ufe0f" else ch
                   for ch in text)
    text = _TAG.sub(" ", _LINE_MARKUP.sub("", text))
    for _ in range(3):  # nested emphasis (***bold italic***, **`code`**)
        text = _EMPHASIS.sub(r"\2", text)
    return _TRAILING.sub("", _LEADING.sub("", " ".join(text.split()))).lower()
