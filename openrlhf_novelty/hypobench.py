"""HypoBench / HypoGeniC task files (pairs of tweets by one author, which got more retweets) -> prompt JSONL."""

from __future__ import annotations

import json

PROMPT = ("You study which tweets get more retweets. Both tweets below were posted by the same author.\n"
          "Tweet A: {first_tweet}\nTweet B: {second_tweet}\n"
          "Propose one testable hypothesis about what makes a tweet get more retweets. "
          "Answer with one line starting with 'HYP:'.")
FIELDS = ("first_tweet", "second_tweet", "label")


def read_records(path: str) -> list[dict]:
    """A columnar JSON object ({"first_tweet": [...], ...}), a JSON list of records, or JSONL records."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path} line {lineno}: not valid JSON ({e.msg})") from None
    if isinstance(data, dict):
        missing = [f for f in FIELDS if not isinstance(data.get(f), list)]
        if missing:
            raise ValueError(f"{path}: columnar file lacks the list(s) {', '.join(missing)}")
        lengths = {len(data[f]) for f in FIELDS}
        if len(lengths) != 1:
            raise ValueError(f"{path}: columns {', '.join(FIELDS)} differ in length")
        data = [{f: data[f][i] for f in FIELDS} for i in range(lengths.pop())]
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: no records")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or any(not isinstance(rec.get(f), str) for f in FIELDS[:2]):
            raise ValueError(f"{path}: record {i} needs string fields first_tweet and second_tweet")
    return data


def to_prompts(records: list[dict], template: str = PROMPT) -> list[dict]:
    return [{"prompt": template.replace("{first_tweet}", r["first_tweet"]).replace("{second_tweet}", r["second_tweet"]),
             "label": str(r.get("label", ""))} for r in records]
