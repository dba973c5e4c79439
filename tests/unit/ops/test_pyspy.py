"""py-spy's collapsed stacks aggregated into self and total time per function."""

from ops.bench.pyspy import function_of, top_functions, top_of_file

STACKS = [
    "<module> (a.py:1);run (a.py:10);handle (b.py:5) 6\n",
    "<module> (a.py:1);run (a.py:12);handle (b.py:7) 2\n",
    "<module> (a.py:1);run (a.py:11) 2\n",
    'process 12:"python -m x";<module> (a.py:1);run (a.py:10);handle (b.py:5);handle (b.py:9) 10\n',
    "not a stack line\n",
    "\n",
]


def test_lines_of_one_function_add_up():
    assert function_of("handle (b.py:5)") == "handle (b.py)"
    assert function_of('process 12:"python -m x"') == 'process 12:"python -m x"'


def test_self_and_total_shares():
    samples, top = top_functions(STACKS, n=2)
    assert samples == 20
    assert [(f.function, f.self_pct, f.total_pct) for f in top] == [
        ("handle (b.py)", 90.0, 90.0),  # recursion counts once in total
        ("run (a.py)", 10.0, 100.0),
    ]
    assert top_functions([]) == (0, [])


def test_from_a_file(tmp_path):
    path = tmp_path / "w.collapsed.txt"
    path.write_text("".join(STACKS))
    assert top_of_file(path, 1)[1][0].function == "handle (b.py)"
