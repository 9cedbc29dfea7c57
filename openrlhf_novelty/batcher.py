"""Scoring concurrent requests together: many threads each submit one item, one of them runs the batch."""

from __future__ import annotations

import threading


class Batcher:
    """Runs ``fn`` on the items of concurrent ``submit`` calls together (leader / followers, no extra thread).

    OpenRLHF sends one sample per request from hundreds of rollouts at once; encoding them one by one costs ~10x
    encoding them as a batch. The first caller to find no batch running becomes the leader: it takes everything
    queued (its own item included), runs ``fn`` once on the list, hands each caller its result, and repeats until
    its own item is done; a waiter whose item is still queued then leads. ``fn`` maps a list of items to a list of
    results, one each, in order.
    """

    def __init__(self, fn, max_items: int = 256):
        self.fn, self.max_items = fn, max_items
        self._cond = threading.Condition()
        self._queue: list[list] = []  # [item, result, done, error]
        self._leader = False

    def submit(self, item):
        slot = [item, None, False, None]
        with self._cond:
            self._queue.append(slot)
            while not slot[2] and self._leader:
                self._cond.wait()
            if slot[2]:
                return self._result(slot)
            self._leader = True
        try:
            while True:
                with self._cond:
                    batch, self._queue = self._queue[:self.max_items], self._queue[self.max_items:]
                if not batch:
                    break
                try:
                    results = self.fn([s[0] for s in batch])
                    for s, r in zip(batch, results):
                        s[1] = r
                except BaseException as e:  # every caller of this batch sees the error (each falls back on its own)
                    for s in batch:
                        s[3] = e
                    if not isinstance(e, Exception):  # KeyboardInterrupt, SystemExit: this thread stops after it
                        raise
                finally:
                    with self._cond:
                        for s in batch:
                            s[2] = True
                        self._cond.notify_all()
                # Our own result is in: hand over. Serving newcomers until the queue runs dry could keep one request
                # thread here indefinitely under steady load (past the host's 180 s request limit); a queued waiter
                # becomes the next leader (finally below).
                if slot[2]:
                    break
        finally:
            with self._cond:
                self._leader = False
                self._cond.notify_all()  # a waiter whose item is still queued becomes the next leader
        return self._result(slot)

    @staticmethod
    def _result(slot):
        if slot[3] is not None:
            raise slot[3]
        return slot[1]
