"""Students of a class run taking turns on what they share: a host, a mail account.

Two students may never capture on one host at once: the capture filter is the servers'
addresses and ports, so each capture would hold the other's sessions (and passwords). Nor use
one mail account at once: each would read the other's mail, and a POP3 session locks the
mailbox. They may use them one after the other, which is what a teaching assistant with fewer
hosts than students does (10 lab hosts, 30 students). So a class run gives each student the
set of things it uses, and ``take_turns`` starts a student only when none of them is in use,
``parallel`` at most at once, in inventory order otherwise: a student whose host is busy is
passed over for the next one whose host is free, so no slot waits while another host idles.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence


def take_turns(needs: Sequence[frozenset[Hashable]], parallel: int, work: Callable[[int], None],
               stop: threading.Event) -> list[threading.Thread]:
    """Start ``parallel`` threads that call ``work(i)`` for every i of ``needs``, never two at
    once whose needs meet. Returns the threads (the caller joins them). Once ``stop`` is set,
    no student starts any more; ``work`` must not raise (a class run catches each student's error)."""
    cond = threading.Condition()
    pending = list(range(len(needs)))
    busy: set[Hashable] = set()

    def next_free() -> int | None:
        for i in pending:
            if not needs[i] & busy:
                return i
        return None

    def worker() -> None:
        while True:
            with cond:
                while True:
                    if stop.is_set() or not pending:
                        cond.notify_all()
                        return
                    i = next_free()
                    if i is not None:
                        break
                    cond.wait(0.5)  # woken when a student ends; the timeout only to see `stop`
                pending.remove(i)
                busy.update(needs[i])
            try:
                work(i)
            finally:
                with cond:
                    busy.difference_update(needs[i])
                    cond.notify_all()

    threads = [threading.Thread(target=worker, name=f"student-{k + 1}", daemon=False)
               for k in range(max(1, min(parallel, len(needs))))]
    for t in threads:
        t.start()
    return threads
