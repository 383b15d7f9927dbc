"""CPU time of server process trees, from the kernel's own accounting.

The figure the bench wants is "how much database CPU does one feed page cost", since
the database is the part that does not scale out. PostgreSQL is a postmaster and one
process per connection plus background workers; Linux counts each process's user and
system time (/proc/<pid>/stat), and adds a child's total to its parent's
`children_*` fields when the parent reaps it. So the tree's CPU at any moment is the
root's own and reaped children's time plus every live descendant's own time, and the
cost of a load run is the difference between two samples around it.

    postgres = ProcessTreeCpu(postmaster_pid(pgdata))
    before = postgres.seconds()
    ...  # the run
    used = postgres.seconds() - before
"""

from __future__ import annotations

from pathlib import Path

import psutil


def postmaster_pid(pgdata: Path) -> int:
    """The postmaster's pid: the first line of `postmaster.pid` in the data directory."""
    return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])


class ProcessTreeCpu:
    """Sum of user + system CPU seconds of a process and all its descendants, live or
    reaped. A descendant that exits between two samples is counted once its parent
    reaps it (PostgreSQL's postmaster does at once); its last few ticks may land in the
    next sample, an error of one clock tick (10 ms) per exited process."""

    def __init__(self, *pids: int) -> None:
        self.roots = [psutil.Process(pid) for pid in pids]  # several: a forest

    def _descendants(self) -> list[psutil.Process]:
        out = []
        for root in self.roots:
            out += root.children(recursive=True)
        return out

    def seconds(self) -> float:
        total = 0.0
        # Descendants first, roots last: a child reaped in between is then counted in
        # its parent's children_* rather than lost.
        for proc in (*self._descendants(), *self.roots):
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:  # exited meanwhile: its parent's children_* has it
                continue
            total += times.user + times.system + times.children_user + times.children_system
        return total

    def per_process(self) -> dict[int, float]:
        """CPU seconds of each root and each live descendant, by pid (how a server's
        work spread over its worker processes)."""
        out = {}
        for proc in (*self.roots, *self._descendants()):
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            out[proc.pid] = times.user + times.system
        return out

    def rss_bytes(self) -> int:
        """Resident memory of the forest (every root and live descendant)."""
        total = 0
        for proc in (*self.roots, *self._descendants()):
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return int(total)


class CpuMeter:
    """Several named process trees sampled together around one run."""

    def __init__(self, trees: dict[str, ProcessTreeCpu]) -> None:
        self.trees = trees

    def sample(self) -> dict[str, float]:
        return {name: tree.seconds() for name, tree in self.trees.items()}

    @staticmethod
    def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """CPU seconds each tree used between two samples."""
        return {name: after[name] - before[name] for name in before}
