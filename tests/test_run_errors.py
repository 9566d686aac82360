"""What `p2pcluster run` says when a job goes wrong: remote exceptions caught by their type,
job files that do not load, results that cannot be sent back. Real subprocesses, as in
`test_run_cli.py`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_run_cli import job_file, run


def test_main_catches_a_remote_value_error_by_its_type(tmp_path: Path) -> None:
    job = job_file(tmp_path, """
        def fails(x):
            raise ValueError(f"bad {x}")

        def main(cluster):
            try:
                cluster.submit(fails, 3).result()
            except ValueError as e:
                return {"caught": str(e), "args": list(e.args), "peer": e.peer}
            return "not caught"
    """)
    done = run(tmp_path, job)
    assert done.returncode == 0, done.stderr
    value = json.loads(done.stdout)
    assert value["args"] == ["bad 3"]
    assert value["caught"].startswith(f"ValueError: bad 3 (on peer {value['peer']})")
    assert 'raise ValueError(f"bad {x}")' in value["caught"]  # the remote traceback
    assert value["peer"]


def test_main_catches_an_exception_class_of_the_job_file(tmp_path: Path) -> None:
    job = job_file(tmp_path, """
        class MyError(Exception):
            pass

        def fails(x):
            raise MyError(f"mine {x}")

        def main(cluster):
            caught = []
            for value in range(2):
                try:
                    list(cluster.map(fails, [value]))
                except MyError as e:
                    caught.append([type(e).__name__, e.args[0], e.type_name.split(".")[1]])
            return caught
    """)
    done = run(tmp_path, job)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [["TaskError[MyError]", f"mine {v}", "MyError"]
                                       for v in range(2)]
