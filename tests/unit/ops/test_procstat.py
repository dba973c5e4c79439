"""/proc reading: stat lines (odd process names), process trees, CPU of groups of trees."""

import os

import pytest

from ops.bench.procstat import (
    TICKS_PER_S,
    ProcStat,
    all_stats,
    groups_ms,
    parse_stat,
    read_stat,
    tree,
    tree_ms,
)


def stat_line(pid, comm, ppid, utime, stime, cutime=0, cstime=0, state="S"):
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    # cutime cstime priority nice threads itrealvalue starttime …
    rest = f"{state} {ppid} 1 1 0 -1 4194304 10 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 3 0 777 1000 200"
    return f"{pid} ({comm}) {rest}\n"


def test_parse_takes_the_fields_after_the_last_parenthesis():
    st = parse_stat(stat_line(42, "celery) S 1 (worker", 7, 100, 20, 5, 3))
    assert st == ProcStat(42, "celery) S 1 (worker", "S", 7, 100, 20, 5, 3, 777)
    assert st.ticks == 128


@pytest.mark.parametrize("bad", ["", "garbage", "12 (x) S 1 2", "(x) S 1"])
def test_parse_refuses_what_is_not_a_stat_line(bad):
    with pytest.raises(ValueError):
        parse_stat(bad)


def fake_proc(tmp_path, lines):
    for line in lines:
        pid = line.split()[0]
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "stat").write_text(line)
    (tmp_path / "self").mkdir()  # not a pid: skipped
    (tmp_path / "99").mkdir()  # a pid that vanished (no stat): skipped
    return tmp_path


def test_trees_sum_living_descendants_once(tmp_path):
    proc = fake_proc(
        tmp_path,
        [
            stat_line(10, "worker", 1, 100, 50, cutime=30, cstime=20),  # reaped children: 50
            stat_line(11, "pool child", 10, 40, 10),
            stat_line(12, "grandchild", 11, 5, 5),
            stat_line(20, "intake", 1, 7, 3),
            stat_line(30, "other", 1, 1000, 0),
        ],
    )
    stats = all_stats(proc)
    assert sorted(stats) == [10, 11, 12, 20, 30]
    assert sorted(tree(10, stats)) == [10, 11, 12] and tree(11, stats) in ([11, 12], [12, 11])
    assert tree(404, stats) == []
    ms = 1000.0 / TICKS_PER_S
    assert tree_ms([10], stats) == pytest.approx(260 * ms)
    assert tree_ms([10, 11], stats) == pytest.approx(260 * ms)  # 11 is under 10: counted once
    assert groups_ms({"worker": [10], "intake": [20], "gone": [404]}, proc) == pytest.approx(
        {"worker": 260 * ms, "intake": 10 * ms, "gone": 0.0}
    )


def test_this_process_reads_back_and_its_cpu_grows():
    me = read_stat(os.getpid())
    assert me is not None and me.pid == os.getpid() and me.ppid == os.getppid()
    before = groups_ms({"me": [os.getpid()]})["me"]
    x = 0
    while groups_ms({"me": [os.getpid()]})["me"] <= before:  # spins until the next clock tick
        x += sum(range(10_000))
    assert read_stat(2**22 + 1) is None  # above pid_max: never a process
