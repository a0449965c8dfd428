"""CPU and memory use of the generator itself and of a server's process tree.

psutil, needed only to watch a server (soak runs, server CPU), is imported when a tree is watched.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any


def cpu_seconds() -> float:
    """This process's CPU time so far (user + system)."""
    times = os.times()
    return times.user + times.system


class ProcessTree:
    """A server process and all its descendants (MLServer's parallel workers)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)

    def _members(self) -> list[Any]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except self._psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        total = 0
        for proc in self._members():
            with contextlib.suppress(self._psutil.Error):
                total += proc.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._members():
            with contextlib.suppress(self._psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total
