"""A correctness reward in OpenRLHF's reward_func format: 1.0 when the last \\boxed{...} (or, failing that, the last
number) of the response equals the label. Used as reward.task_func by examples/configs/math.yaml."""

import re
from fractions import Fraction

import torch


def _final_answer(text: str) -> str | None:
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", text)
    if boxed:
        return boxed[-1].strip()
    numbers = re.findall(r"-?\d+(?:\.\d+)?(?:/\d+)?", text)
    return numbers[-1] if numbers else None


def _same(a: str | None, b: str) -> bool:
    if a is None:
        return False
    a, b = a.replace(" ", "").rstrip("."), str(b).replace(" ", "")
    try:  # numbers compare by value ("1/2" == "0.5"); never eval model output
        return Fraction(a) == Fraction(b)
    except (ValueError, ZeroDivisionError):
        return a == b


def reward_func(queries, prompts, labels):
    rewards = []
    for q, p, label in zip(queries, prompts, labels):
        response = q[len(p):] if q.startswith(p) else q
        rewards.append(1.0 if _same(_final_answer(response), label) else 0.0)
    return {"rewards": torch.tensor(rewards), "scores": torch.tensor(rewards)}
