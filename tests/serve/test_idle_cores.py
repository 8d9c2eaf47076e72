import os
from pathlib import Path

from tuneloop.serve.backends.cores import IdleCores

TICK = os.sysconf("SC_CLK_TCK")
CPUS = sorted(os.sched_getaffinity(0))


def write_stat(path: Path, busy: float, idle: float) -> None:
    """A /proc/stat whose every core of this process has spent `busy` and `idle` seconds since boot."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    lines += [f"cpu{i} {int(busy * TICK)} 0 0 {int(idle * TICK)} 0 0 0 0 0 0" for i in CPUS]
    path.write_text("\n".join([*lines, "intr 1 2 3", ""]))


def cores_after(tmp_path: Path, busy_share: float) -> int:
    """The threads IdleCores picks after every core spent `busy_share` of 1,000 s busy with other work."""
    stat = tmp_path / "stat"
    write_stat(stat, 10, 10)
    cores = IdleCores(stat, every=0)
    write_stat(stat, 10 + 1000 * busy_share, 10 + 1000 * (1 - busy_share))
    return cores.threads()


def test_an_otherwise_idle_machine_gets_every_core(tmp_path):
    assert cores_after(tmp_path, 0.0) == len(CPUS)


def test_cores_other_processes_keep_busy_are_left_to_them(tmp_path):
    assert cores_after(tmp_path, 1.0) == 1
    if len(CPUS) >= 2:
        # Others use a core's worth of the machine: one fewer thread than cores.
        assert cores_after(tmp_path, 1 / len(CPUS)) == len(CPUS) - 1


def test_a_little_background_work_does_not_cost_a_thread(tmp_path):
    assert cores_after(tmp_path, 0.1 / len(CPUS)) == len(CPUS)


def test_an_unreadable_stat_keeps_half_the_cores(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu0 not numbers\n")
    assert IdleCores(stat, every=0).threads() == max(1, len(CPUS) // 2)
    assert IdleCores(tmp_path / "missing", every=0).threads() == max(1, len(CPUS) // 2)


def test_the_real_proc_stat_gives_a_thread_count_within_the_cores():
    cores = IdleCores(every=0)
    sum(i * i for i in range(200_000))  # let the clock tick between the looks
    assert 1 <= cores.threads() <= len(CPUS)
