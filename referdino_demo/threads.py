"""How many CPU threads the model may use, shared among the jobs that run at once.

`available_cpus` counts the CPUs this process may really use: its affinity mask (`taskset`, a container's
`--cpuset-cpus`) and its cgroup CPU quota (`--cpus`, a Kubernetes CPU limit), which `os.cpu_count()` and torch's
default thread count do not see. A process given 2 CPUs' worth of time on a 64-core host that starts 64 threads
is throttled every period and runs many times slower than with 2.

`ThreadBudget` shares those CPUs among concurrent jobs of one process: a job runs inside `budget.job()`, which sets
the thread count of the calling thread to its share (2 jobs on 4 CPUs get 2 threads each, not 4). This works per
thread because torch's `set_num_threads` sets the calling thread's OpenMP and MKL thread counts, and each thread
that starts parallel work keeps its own team of workers.

`openmp_defaults` (applied by the package's `__init__`, before torch is imported) keeps idle OpenMP workers from
spinning for long: see `OPENMP_DEFAULTS`. A job's per-frame stages run as frame streams, one per CPU of the budget,
that share the job's threads (`model/streams.py`).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path

# libgomp's idle workers spin (busy-wait) for the next parallel region: 300,000 spins (a few ms) by default. When
# another busy process holds one of the cores, every small parallel region ends with one thread spinning while its
# partner waits for a time slice, so a stage of many small ops runs 10-50x slower (`benchmarks.neighbour`).
# Sleeping at once (OMP_WAIT_POLICY=PASSIVE) removes that, but each region then pays a wake-up: Swin-T 8-15% slower
# on an idle machine. The per-frame stages avoid most regions (`model/streams.py`); 1,000 spins (20-50 us on a
# 2-core VM) keep the rest (text encoder, tracker, temporal decoder) from collapsing beside a neighbour, where
# streams alone still left the tiny model at 3.9x, and bridge the gap between back-to-back regions when it is quiet.
# libgomp reads these only when it is loaded (with torch), so they must be set before torch is imported.
OPENMP_DEFAULTS = {"GOMP_SPINCOUNT": "1000"}
OPT_OUT = "REFERDINO_OPENMP_DEFAULTS"  # "0": leave OpenMP's own defaults


def openmp_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set `OPENMP_DEFAULTS` in `environ` where the user has not chosen (their `GOMP_SPINCOUNT` or
    `OMP_WAIT_POLICY` wins; `REFERDINO_OPENMP_DEFAULTS=0` leaves OpenMP's defaults). Without effect on this
    process once torch is imported (libgomp has read its environment by then), only on its child processes."""
    if environ.get(OPT_OUT) == "0" or "OMP_WAIT_POLICY" in environ:  # a wait policy sets the spin count itself
        return
    for name, value in OPENMP_DEFAULTS.items():
        environ.setdefault(name, value)


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup",
                     membership: str | os.PathLike = "/proc/self/cgroup") -> float | None:
    """The CPUs' worth of time the cgroup quota allows this process (quota / period, e.g. 1.5), or None if
    unlimited or unreadable.

    Reads cgroup v2 `cpu.max` ("max 100000" or "150000 100000") and cgroup v1 `cpu.cfs_quota_us` /
    `cpu.cfs_period_us` (quota -1 = unlimited) in the process's own cgroup (from `membership`) and its ancestors,
    and returns the smallest limit found: a parent's quota binds its children too. Inside a container the own
    cgroup is usually the mount's root, which is always read.
    """
    root = Path(root)
    limits = []
    for controllers, path in _memberships(Path(membership)):
        if controllers == "":  # v2: one unified hierarchy, at the root or (hybrid systems) under unified/
            for mount in (root, root / "unified"):
                limits.extend(_v2_limit(folder / "cpu.max") for folder in _folders(mount, path))
        elif "cpu" in controllers.split(","):
            for mount in (root / controllers, root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):
                if mount.is_dir():
                    limits.extend(_v1_limit(folder) for folder in _folders(mount, path))
                    break
    limits = [limit for limit in limits if limit is not None]
    return min(limits, default=None)


def _memberships(membership: Path) -> list[tuple[str, str]]:
    """(controllers, path) per line of /proc/self/cgroup ("id:controllers:path"). Without a readable membership
    file (not Linux, or hidden), the v2 root alone."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return [("", "/")]
    entries = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            entries.append((parts[1], parts[2]))
    return entries


def _folders(mount: Path, path: str) -> list[Path]:
    """The cgroup folder of `path` under `mount` and each ancestor up to the mount itself (which is read even when
    `path` is not visible, as in a container whose cgroup namespace hides the host path)."""
    folders = [mount]
    current = mount
    for part in Path(path).parts[1:]:
        current = current / part
        folders.append(current)
    return folders


def _v2_limit(cpu_max: Path) -> float | None:
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return None if quota == "max" else _ratio(quota, period)
    except (OSError, ValueError):
        return None


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = (folder / "cpu.cfs_quota_us").read_text().strip()
        period = (folder / "cpu.cfs_period_us").read_text().strip()
        return None if int(quota) < 0 else _ratio(quota, period)
    except (OSError, ValueError):
        return None


def _ratio(quota: str, period: str) -> float | None:
    quota_us, period_us = int(quota), int(period)
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cpus(root: str | os.PathLike = "/sys/fs/cgroup",
                   membership: str | os.PathLike = "/proc/self/cgroup") -> int:
    """The CPUs this process may really use: its affinity mask, capped by its cgroup quota rounded up (a quota of
    1.5 CPUs runs 2 threads best: one thread would leave half a CPU unused); at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root, membership)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


class ThreadBudget:
    """`total` CPU threads shared among the jobs of one process that run at once.

    A job runs inside `job()`: the calling thread's torch thread count becomes the job's share, `total // n` for
    n jobs running (the first `total % n` jobs get one more), at least 1; leaving restores the thread's previous
    count. A running job's share follows later arrivals and departures when it calls `Job.refresh` (between
    chunks, say); until then the CPUs are briefly over-subscribed, never idle. `job()` is re-entrant: inside a
    job, the same thread's `job()` is that job.

    total: default `available_cpus()`, capped by torch's thread count when the budget is made (so
    `OMP_NUM_THREADS` or an earlier `torch.set_num_threads` still lower it).
    """

    def __init__(self, total: int | None = None):
        if total is None:
            import torch

            total = min(available_cpus(), torch.get_num_threads())
        if total < 1:
            from .errors import ConfigError

            raise ConfigError(f"a thread budget needs at least 1 thread, got {total}")
        self.total = total
        self._lock = threading.Lock()
        self._jobs: list[Job] = []
        self._local = threading.local()

    @property
    def running(self) -> int:
        """The number of jobs inside `job()` now."""
        with self._lock:
            return len(self._jobs)

    def share_of(self, job: "Job") -> int:
        """The threads `job` may use now (0 if it is not running)."""
        with self._lock:
            if job not in self._jobs:
                return 0
            base, extra = divmod(self.total, len(self._jobs))
            return max(1, base + (self._jobs.index(job) < extra))

    @contextmanager
    def job(self) -> Iterator["Job"]:
        """Run the body as one job: the calling thread uses the job's share of threads until the body ends."""
        current = getattr(self._local, "job", None)
        if current is not None:  # nested: already counted
            yield current
            return
        import torch

        job = Job(self)
        previous = torch.get_num_threads()
        with self._lock:
            self._jobs.append(job)
        self._local.job = job
        try:
            job.refresh()
            yield job
        finally:
            self._local.job = None
            with self._lock:
                self._jobs.remove(job)
            torch.set_num_threads(previous)


class Job:
    """A job of a `ThreadBudget`; `threads` is the count its thread uses now."""

    def __init__(self, budget: ThreadBudget):
        self.budget = budget
        self.threads = 0

    def refresh(self) -> int:
        """Set the calling thread's torch thread count to this job's current share; -> that count. Call it from
        the job's own thread (the count is per thread)."""
        import torch

        share = self.budget.share_of(self)
        if share and share != self.threads:
            torch.set_num_threads(share)
            self.threads = share
        return self.threads


_default: ThreadBudget | None = None
_default_lock = threading.Lock()


def default_budget() -> ThreadBudget:
    """The process-wide budget over `available_cpus()`, made on first use; every predictor shares it."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ThreadBudget()
        return _default
