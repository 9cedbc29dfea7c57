"""What keeps a run of a million steps bounded: a map that forgets its least recently used entries, and a throttle
for warnings that would otherwise be printed once per sample."""

from __future__ import annotations

from collections import OrderedDict


class LRU(OrderedDict):
    """An OrderedDict of at most ``size`` entries: ``put`` forgets the least recently used, ``hit`` refreshes one.
    Not locked: each owner holds its own lock around it."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def hit(self, key, default=None):
        """The value under ``key`` (now the most recent), or ``default``."""
        if key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def put(self, key, value) -> list:
        """Store ``value`` as the most recent; returns the (key, value) pairs forgotten to make room."""
        self[key] = value
        self.move_to_end(key)
        return self.trim()

    def trim(self) -> list:
        forgotten = []
        while len(self) > self.size:
            forgotten.append(self.popitem(last=False))
        return forgotten


def worth_logging(count: int, first: int = 10, every: int = 1000) -> bool:
    """Whether the ``count``-th occurrence of a repeated warning is printed: the first few, then one in ``every``."""
    return count <= first or count % every == 0
