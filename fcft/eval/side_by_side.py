"""Rows scored side by side on a CPU's cores: each core runs its own row, one per pass, instead of all cores
splitting one row's matrix products (torch's intra-op threads split a row's small products poorly: on fcft's
benchmark two cores on one row took ~15% more CPU time than one core each on its own row).

`contiguous_parts` cuts the rows, in the order the scorer wants them (token order, so that neighbours share
prompt prefixes), into runs of about equal work; `run` runs a generator over each run in its own thread, torch
on one intra-op thread meanwhile, and yields what they yield as it comes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def contiguous_parts(items: list[T], parts: int, weight: Callable[[T], int]) -> list[list[T]]:
    """`items` cut, in order, into at most `parts` non-empty runs of about equal total weight."""
    parts = max(1, min(parts, len(items)))
    total = sum(weight(item) for item in items)
    runs, current, done = [], [], 0
    for index, item in enumerate(items):
        current.append(item)
        done += weight(item)
        left_items, left_runs = len(items) - index - 1, parts - len(runs) - 1
        if left_runs and (done >= total * (len(runs) + 1) / parts or left_items == left_runs):
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_FINISHED = object()


def run(work: Callable[[list[T]], Iterator[R]], parts: list[list[T]]) -> Iterator[R]:
    """What `work(part)` yields for every part, each part in its own thread (in inference mode: grad mode is per
    thread) while torch runs each operation on one thread; torch's thread count is restored after. A single part
    (or none) runs here, in this thread. The first error in a worker is raised here; closing the iterator (or an error)
    stops the workers after their current item."""
    import torch

    if len(parts) < 2:
        for part in parts:
            yield from work(part)
        return
    results: queue.Queue = queue.Queue()
    stop = threading.Event()

    def worker(part: list[T]) -> None:
        try:
            with torch.inference_mode():
                for result in work(part):
                    results.put(result)
                    if stop.is_set():
                        return
        except BaseException as error:  # raised again in the caller's thread
            results.put(_Failed(error))
        finally:
            results.put(_FINISHED)

    threads = torch.get_num_threads()
    workers = [threading.Thread(target=worker, args=(part,), name=f"fcft-scorer-{i}") for i, part in enumerate(parts)]
    torch.set_num_threads(1)
    try:
        for thread in workers:
            thread.start()
        running = len(workers)
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
        for thread in workers:
            thread.join()
        torch.set_num_threads(threads)
