"""A correctness reward in OpenRLHF's reward_func format: 1.0 when the response's boxed answer equals the label.
Used as reward.task_func by examples/configs/math.yaml.

The answer is read exactly as the outcome term reads it (``openrlhf_novelty.outcome.final_answer``: every
\\boxed{} / \\fbox{} of the response, braces balanced, normalised as math; two boxes with different answers are no
answer). A verifier that read another string than the outcome term would let a policy be graded on one answer and
paid novelty for another (a second box, a box with nested braces the verifier skipped)."""

import torch

from openrlhf_novelty.outcome import final_answer, normalize_math


def reward_func(queries, prompts, labels):
    rewards = []
    for q, p, label in zip(queries, prompts, labels):
        response = q[len(p):] if q.startswith(p) else q
        answer = final_answer(response, "boxed")
        rewards.append(1.0 if answer is not None and answer == normalize_math(str(label)) else 0.0)
    return {"rewards": torch.tensor(rewards), "scores": torch.tensor(rewards)}
