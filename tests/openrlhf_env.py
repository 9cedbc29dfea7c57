"""Import the real OpenRLHF 0.11.2 on a CPU machine.

Only the CUDA-only modules it imports at module level get stand-ins: ``vllm`` (generation is faked in these tests)
and ``flash_attn`` (never called on CPU). Everything the tests exercise is OpenRLHF's own code.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from unittest.mock import MagicMock

CUDA_ONLY = ["vllm", "vllm.inputs", "vllm.utils", "vllm.sampling_params", "flash_attn", "flash_attn.bert_padding",
             "flash_attn.utils", "flash_attn.utils.distributed"]


def install_stand_ins() -> None:
    for name in CUDA_ONLY:
        root = name.split(".")[0]
        if name in sys.modules or (root not in sys.modules and importlib.util.find_spec(root) is not None):
            continue
        module = MagicMock(name=name)
        module.__path__ = []
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # transformers calls find_spec on it
        sys.modules[name] = module
