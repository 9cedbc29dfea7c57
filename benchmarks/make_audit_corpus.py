"""Build the shipped audit corpus (benchmarks/audit_corpus.jsonl) from its parts: how it was made, once.

    python benchmarks/make_audit_corpus.py generate   # SmolLM2-135M-Instruct answers, ~5 min on 2 CPU cores
    python benchmarks/make_audit_corpus.py build      # merge with the hand-checked answers

Parts, all in benchmarks/audit/:
- prompts.jsonl: 28 shipped prompts (12 tweet-pair hypotheses and 8 ideas from openrlhf_novelty/data, 8 stories
  from examples/data/creative_prompts.jsonl), interleaved by kind.
- smollm2.jsonl: 20 SmolLM2 answers per prompt (temperature 1, top-p 0.95, seed 0; 64 new tokens, 128 for stories).
- sound.jsonl: 4 hand-checked sound, on-topic answers per prompt, each with a paraphrase and a translation (French,
  Spanish, German, Chinese by index): the honest answers the audit attacks, and the variants its paraphrase and
  translation attacks use when no language model is configured.

The corpus, in the order the audit replays it (groups of 8, as `score --group-size 8` reads them):
1. history: two groups of 8 SmolLM2 answers per prompt (448 samples: RND is past its 256-sample warm-up, the
   archive and the relevance reference are filled, as in the middle of training);
2. audited: one group per prompt of its 4 sound answers (``"sound": true``, with ``"variants"``) and 4 more
   SmolLM2 answers, the siblings.
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "audit")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "audit_corpus.jsonl")
PER_PROMPT, HISTORY = 20, 16


def read(name: str) -> list[dict]:
    with open(os.path.join(HERE, name), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def generate() -> None:
    import torch

    from openrlhf_novelty.lm import ChatLM

    torch.manual_seed(0)
    lm = ChatLM.shared("smollm2")
    rows = []
    for p in read("prompts.jsonl"):
        tokens = 128 if p["kind"] == "story" else 64
        replies = lm.sample([p["prompt"]], PER_PROMPT, tokens, 1.0, 0.95)[0]
        rows += [{"id": p["id"], "response": r} for r in replies]
        print(p["id"], len(rows), flush=True)
    with open(os.path.join(HERE, "smollm2.jsonl"), "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def build() -> None:
    prompts = {p["id"]: p for p in read("prompts.jsonl")}
    smol: dict[str, list[str]] = {}
    for r in read("smollm2.jsonl"):
        smol.setdefault(r["id"], []).append(r["response"])
    sound: dict[str, list[dict]] = {}
    for r in read("sound.jsonl"):
        sound.setdefault(r["id"], []).append(r)
    out = []
    for half in (0, 1):  # history: two rollout steps' worth of each prompt
        for pid, p in prompts.items():
            out += [{"prompt": p["prompt"], "response": t, "source": "smollm2", "kind": p["kind"]}
                    for t in smol[pid][half * 8:(half + 1) * 8]]
    for pid, p in prompts.items():
        hand = sorted(sound[pid], key=lambda r: r["index"])
        out += [{"prompt": p["prompt"], "response": r["response"], "source": "hand", "kind": p["kind"], "sound": True,
                 "variants": {"paraphrase": r["paraphrase"], "translation": r["translation"]},
                 "lang": r["translation_lang"]} for r in hand]
        out += [{"prompt": p["prompt"], "response": t, "source": "smollm2", "kind": p["kind"]}
                for t in smol[pid][HISTORY:PER_PROMPT]]
    with open(OUT, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in out)
    print(f"wrote {len(out)} rows to {OUT}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    {"generate": generate, "build": build}[sys.argv[1]]()
