"""Reading prompt / response JSONL files, with errors that name the file and line."""

from __future__ import annotations

import json
import sys


def read_samples(path: str) -> list[dict]:
    """One ``{"prompt": str, "response": str, ...}`` object per line ('-' = stdin); each row gets ``_line``.

    Raises ValueError with a one-line message naming the file and line for anything malformed.
    """
    try:
        fh = sys.stdin if path == "-" else open(path, encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None
    rows = []
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {lineno}: expected a JSON object, got {type(row).__name__}")
            for key in ("prompt", "response"):
                if not isinstance(row.get(key), str):
                    problem = "missing" if key not in row else f"not a string ({type(row[key]).__name__})"
                    raise ValueError(f"{path} line {lineno}: field '{key}' is {problem}")
            row["_line"] = lineno
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rollouts (the file is empty)")
    return rows
