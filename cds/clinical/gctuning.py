"""The garbage collector of a process that decides calls for a long time (a service worker, a population worker).

Once the content is loaded it never dies, so it is frozen out of every later collection. And a decision
allocates thousands of short-lived containers (parsed JSON, models, facts) that reference counting frees
at once; while they are alive, CPython's default of a young collection every 700 net allocations walks
them again and again: parsing a 0.5 MB body took 8.8 ms instead of 2.7 ms (measured on this project's
2-core VM), and P01 calls went from 0.1-1 young collections each to one in 3,000 calls. Twenty
thousand keeps a collection's work small and rare; garbage in reference cycles (durable_rules' host left
some per action; pydantic errors still do) waits a little longer for it.
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION_EVERY = 20_000  # net container allocations (CPython's default: 700)


def settle_after_loading() -> None:
    """Call once the process holds everything it loads at start-up, before it takes work."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, old)
