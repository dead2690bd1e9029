"""Rows scored side by side on a CPU's cores: each core runs its own row, one per pass, instead of all cores
splitting one row's matrix products (torch's intra-op threads split a row's small products poorly: on fcft's
benchmark two cores on one row took ~15% more CPU time than one core each on its own row).

`run` hands out parts of the work (the scorer's runs of rows that share prompt prefixes, longest first) to
worker threads as they come free, torch on one intra-op thread meanwhile, and yields what they yield as it
comes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_FINISHED = object()


def run(work: Callable[[T], Iterator[R]], parts: list[T], workers: int) -> Iterator[R]:
    """What `work(part)` yields for every part, in `workers` threads (in inference mode: grad mode is per thread)
    that each take the next part in the given order when done with one, while torch runs each operation on one
    thread; torch's thread count is restored after. One worker (or one part) runs here, in this thread. The first
    error in a worker is raised here; closing the iterator (or an error) stops the workers after their current
    item."""
    import torch

    workers = min(workers, len(parts))
    if workers < 2:
        for part in parts:
            yield from work(part)
        return
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for part in parts:
        todo.put(part)
    results: queue.Queue = queue.Queue()
    stop = threading.Event()

    def worker() -> None:
        try:
            with torch.inference_mode():
                while not stop.is_set():
                    try:
                        part = todo.get_nowait()
                    except queue.Empty:
                        return
                    for result in work(part):
                        results.put(result)
                        if stop.is_set():
                            return
        except BaseException as error:  # raised again in the caller's thread
            results.put(_Failed(error))
        finally:
            results.put(_FINISHED)

    threads = torch.get_num_threads()
    pool = [threading.Thread(target=worker, name=f"fcft-scorer-{i}") for i in range(workers)]
    torch.set_num_threads(1)
    try:
        for thread in pool:
            thread.start()
        running = len(pool)
        while running:
            result = results.get()
            if result is _FINISHED:
                running -= 1
            elif isinstance(result, _Failed):
                raise result.error
            else:
                yield result
    finally:
        stop.set()
        for thread in pool:
            thread.join()
        torch.set_num_threads(threads)
