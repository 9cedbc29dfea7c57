"""One rank of the two-process test in test_trl.py (run by torch.distributed.run): a 6-sample batch in groups of 3,
split 4 / 2 so the second group straddles the ranks; writes this rank's rewards to <folder>/rank<i>.json."""

import json
import os
import sys

from accelerate import PartialState

from openrlhf_novelty.config import NoveltyConfig
from openrlhf_novelty.trl_reward import NoveltyRewardFunc
from tests.test_trl import SPLIT_COMPLETIONS, SPLIT_PROMPTS

state = PartialState(cpu=True)  # what TRL sets up with use_cpu=True; the adapter's gather reuses it
lo, hi = (0, 4) if state.process_index == 0 else (4, 6)
reward = NoveltyRewardFunc(NoveltyConfig.from_dict({"extract": {"pattern": r"HYP:\s*(.+)"}}))
reward.num_generations = 3
out = reward(SPLIT_PROMPTS[lo:hi], SPLIT_COMPLETIONS[lo:hi])
with open(os.path.join(sys.argv[1], f"rank{state.process_index}.json"), "w") as fh:
    json.dump({"rewards": out, "world": state.num_processes, "failures": reward.failures}, fh)
