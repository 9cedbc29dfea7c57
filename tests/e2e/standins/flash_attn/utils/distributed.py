from flash_attn import _not_on_cpu as all_gather  # noqa: F401  (import-only stand-in: see flash_attn/__init__)
