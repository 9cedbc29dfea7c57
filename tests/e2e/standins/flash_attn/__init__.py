"""Import-only stand-in for flash-attn (CUDA-only, cannot be built here), test-only (e2e harness).

openrlhf/models/ring_attn_utils.py imports flash_attn.bert_padding and flash_attn.utils.distributed at module level;
they are only *called* with packing / ring attention, which the e2e run does not use. Any call raises.
"""
import os

if os.environ.get("OPENRLHF_NOVELTY_E2E_LOG"):
    from sitecustomize import hit

    hit("flash_attn (import only)")


def _not_on_cpu(*args, **kwargs):
    raise RuntimeError("flash_attn stand-in (tests/e2e): packing / ring attention need the real flash-attn on a GPU")
