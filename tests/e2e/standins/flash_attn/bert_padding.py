from flash_attn import _not_on_cpu as index_first_axis  # noqa: F401  (import-only stand-in: see __init__)
from flash_attn import _not_on_cpu as pad_input  # noqa: F401
from flash_attn import _not_on_cpu as rearrange  # noqa: F401
from flash_attn import _not_on_cpu as unpad_input  # noqa: F401
