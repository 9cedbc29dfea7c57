"""The e2e run's task reward (reward.task_func): 0.3 for every answer. No default config yields it, so a logged
novelty/task of exactly 0.3 proves the config reached the reward file inside the vLLM engine."""


def reward_func(queries, prompts, labels, **kwargs):
    return [0.3] * len(queries)
