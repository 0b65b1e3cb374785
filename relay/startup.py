"""What a long-running relay process does once its app is loaded."""
import gc
import logging

log = logging.getLogger("relay.startup")  # by name: gunicorn.conf.py loads this file on its own


def freeze_startup_objects() -> int:
    """Keep the objects loaded at start-up out of full garbage collections; log and return how many there are.

    A full collection walks every tracked object: with the app loaded, about 100,000, which took about 100 ms on
    a 2-core machine. In a web worker that stalls the request that set it off and every one queued behind it; in
    the delivery process it can happen while a claim holds SQLite's write lock, which every webhook then waits for.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("froze %d start-up objects out of the garbage collector's way", frozen)
    return frozen
