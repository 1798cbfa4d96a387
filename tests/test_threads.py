"""The CPUs a process may use (affinity, cgroup v1/v2 quotas read from fake cgroup trees), the thread budget shared
by concurrent jobs, and the OpenMP defaults set before torch loads."""

import os
import subprocess
import sys
import threading

import pytest
import torch

from referdino_demo import threads
from referdino_demo.threads import ThreadBudget, available_cpus, cgroup_cpu_limit, openmp_defaults


def _tree(root, files: dict[str, str]):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize("membership, files, expected", [
    # cgroup v2, inside a container (own cgroup = the mount's root)
    ("0::/\n", {"cpu.max": "150000 100000\n"}, 1.5),
    ("0::/\n", {"cpu.max": "max 100000\n"}, None),
    # v2 on a host: the own cgroup and its ancestors; the tightest limit wins
    ("0::/app/job\n", {"cpu.max": "max 100000\n", "app/cpu.max": "50000 100000\n", "app/job/cpu.max": "max 100000\n"},
     0.5),
    ("0::/app/job\n", {"app/job/cpu.max": "400000 100000\n"}, 4.0),
    # cgroup v1, cpu and cpuacct mounted together, as Docker does
    ("4:memory:/x\n3:cpu,cpuacct:/docker/abc\n",
     {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000\n", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"},
     2.0),
    ("3:cpu,cpuacct:/\n", {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None),
    # v1 with cpu alone, the container's path hidden: the mount's root still holds the limit
    ("1:cpu:/host/path/not/visible\n", {"cpu/cpu.cfs_quota_us": "250000\n", "cpu/cpu.cfs_period_us": "100000\n"},
     2.5),
    # hybrid: v1 cpu limit plus a v2 tree without one; or the limit in the v2 tree, mounted under unified/
    ("1:cpu:/\n0::/\n", {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),
    ("1:cpu:/\n0::/job\n", {"unified/job/cpu.max": "200000 100000\n"}, 2.0),
    # unreadable or damaged files mean no limit, not an error
    ("0::/\n", {"cpu.max": "lots\n"}, None),
    ("0::/\n", {"cpu.max": "100000 0\n"}, None),
    ("0::/\n", {}, None),
])
def test_cgroup_cpu_limit(tmp_path, membership, files, expected):
    root = _tree(tmp_path / "cgroup", files)
    root.mkdir(exist_ok=True)
    (tmp_path / "self_cgroup").write_text(membership)
    assert cgroup_cpu_limit(root, tmp_path / "self_cgroup") == expected


def test_without_a_membership_file_the_v2_root_is_read(tmp_path):
    root = _tree(tmp_path / "cgroup", {"cpu.max": "300000 100000\n"})
    assert cgroup_cpu_limit(root, tmp_path / "missing") == 3.0


@pytest.mark.parametrize("affinity, quota, expected", [
    (8, None, 8), (8, "150000 100000", 2), (8, "100000 100000", 1), (2, "800000 100000", 2), (4, "1000 100000", 1),
])
def test_available_cpus_follows_affinity_and_quota(tmp_path, monkeypatch, affinity, quota, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
    root = _tree(tmp_path / "cgroup", {"cpu.max": f"{quota}\n"} if quota else {})
    (tmp_path / "self_cgroup").write_text("0::/\n")
    assert available_cpus(root, tmp_path / "self_cgroup") == expected


def test_this_machine_has_at_least_one_cpu():
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)


def _run_jobs(budget: ThreadBudget, count: int):
    """`count` threads run a job at once; -> each job's threads after `refresh` while all run (the first to enter
    had every thread until then), and each other job's threads after `refresh` once job 0 has ended."""
    inside, after = {}, {}
    all_in, first_left = threading.Barrier(count), threading.Event()
    refreshed = threading.Barrier(count - 1)

    def worker(index):
        with budget.job() as job:
            all_in.wait()
            inside[index] = job.refresh()
            all_in.wait()  # every share is read before anyone leaves
            if index:
                first_left.wait()
                after[index] = job.refresh()
                refreshed.wait()
        if index == 0:
            first_left.set()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for worker_thread in workers:
        worker_thread.start()
    for worker_thread in workers:
        worker_thread.join()
    return inside, after


@pytest.mark.parametrize("total, count, shares, after", [
    (4, 2, [2, 2], {1: 4}),
    (3, 2, [2, 1], {1: 3}),
    (2, 2, [1, 1], {1: 2}),
    (2, 3, [1, 1, 1], {1: 1, 2: 1}),  # never below one thread
    (6, 3, [2, 2, 2], {1: 3, 2: 3}),
])
def test_concurrent_jobs_share_the_budget(total, count, shares, after):
    budget = ThreadBudget(total)
    inside, refreshed = _run_jobs(budget, count)
    assert sorted(inside.values()) == sorted(shares)
    assert refreshed == after
    assert budget.running == 0


def test_a_lone_job_gets_every_thread_and_the_count_is_restored():
    previous = torch.get_num_threads()
    budget = ThreadBudget(3)
    with budget.job() as job:
        assert job.threads == 3 and torch.get_num_threads() == 3 and budget.running == 1
        with budget.job() as inner:  # re-entrant: the same job, counted once
            assert inner is job and budget.running == 1
        assert budget.running == 1
    assert budget.running == 0 and torch.get_num_threads() == previous


def test_the_count_is_restored_after_an_error():
    previous = torch.get_num_threads()
    budget = ThreadBudget(1)
    with pytest.raises(RuntimeError, match="boom"):
        with budget.job():
            raise RuntimeError("boom")
    assert budget.running == 0 and torch.get_num_threads() == previous


def test_default_budget_is_shared_and_capped_by_torch(monkeypatch):
    monkeypatch.setattr(threads, "_default", None)
    monkeypatch.setattr(threads, "available_cpus", lambda: 64)
    assert threads.default_budget() is threads.default_budget()
    assert threads.default_budget().total == torch.get_num_threads()  # OMP_NUM_THREADS / set_num_threads still cap


def test_an_empty_budget_is_refused():
    from referdino_demo.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 1 thread, got 0"):
        ThreadBudget(0)


@pytest.mark.parametrize("environ, expected", [
    ({}, {"GOMP_SPINCOUNT": "1000"}),
    ({"GOMP_SPINCOUNT": "5"}, {"GOMP_SPINCOUNT": "5"}),  # the user's choice wins
    ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}),  # a wait policy sets its own spin count
    ({"REFERDINO_OPENMP_DEFAULTS": "0"}, {"REFERDINO_OPENMP_DEFAULTS": "0"}),
])
def test_openmp_defaults(environ, expected):
    openmp_defaults(environ)
    assert environ == expected


def test_the_package_sets_the_defaults_before_torch_loads():
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY",
                                                            "REFERDINO_OPENMP_DEFAULTS")}
    code = "import os, sys, referdino_demo; print('torch' in sys.modules, os.environ['GOMP_SPINCOUNT'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "1000"]
