"""What `p2pcluster run` says when a job goes wrong: remote exceptions caught by their type,
job files that do not load, results that cannot be sent back. Real subprocesses, as in
`test_run_cli.py`."""

from __future__ import annotations

import json
from pathlib import Path

from .test_run_cli import job_file, run


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


# --- job files that do not load ------------------------------------------------------------


def assert_nothing_internal(stderr: str, tmp_path: Path) -> None:
    for internal in ("p2pcluster/", "p2pjob_", "<frozen", "importlib", str(tmp_path / "cache")):
        assert internal not in stderr, (internal, stderr)


def test_a_syntax_error_names_the_users_path_and_line(tmp_path: Path) -> None:
    source = "def square(x):\n    return x * x\n\ndef main(cluster:\n    return 1\n"
    job = job_file(tmp_path / "jobs", source)
    try:
        compile(source, "jobs/job.py", "exec")
    except SyntaxError as exc:
        expected = exc
    done = run(tmp_path, job.relative_to(tmp_path))
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == f"p2pcluster run: jobs/job.py, line {expected.lineno}: {expected.msg}"
    assert lines[1] == "    def main(cluster:"
    assert lines[2].strip() == "^" and lines[2].index("^") == 4 + (expected.offset or 1) - 1
    assert len(lines) == 3
    assert_nothing_internal(done.stderr, tmp_path)


def test_a_failing_import_shows_only_the_job_files_frames(tmp_path: Path) -> None:
    job = job_file(tmp_path, '''
        """A job that needs a module nobody installed."""
        import doesnotexist_p2p

        def main(cluster):
            return 1
    ''')
    done = run(tmp_path, job.relative_to(tmp_path))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "p2pcluster run: loading job.py failed: its top-level code raised an exception.",
        "Traceback (most recent call last):",
        '  File "job.py", line 3, in <module>',
        "    import doesnotexist_p2p",
        "ModuleNotFoundError: No module named 'doesnotexist_p2p'",
        "p2pcluster run: install doesnotexist_p2p on this machine and on every peer, or ship "
        "it with --include PATH",
    ]


def test_an_exception_at_import_shows_the_user_files_it_went_through(tmp_path: Path) -> None:
    job_file(tmp_path / "jobs", """
        def setup():
            return 1 / 0  # helper fails
    """, name="helper.py")
    job = job_file(tmp_path / "jobs", """
        import helper

        TABLE = helper.setup()

        def main(cluster):
            return TABLE
    """)
    done = run(tmp_path, job.relative_to(tmp_path))
    assert done.returncode == 1 and done.stdout == ""
    lines = [line for line in done.stderr.splitlines() if line.strip(" ^~")]  # no carets
    assert lines[0] == ("p2pcluster run: loading jobs/job.py failed: its top-level code "
                        "raised an exception.")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[2:4] == ['  File "jobs/job.py", line 4, in <module>',
                          "    TABLE = helper.setup()"]
    assert lines[4] == f'  File "{tmp_path / "jobs" / "helper.py"}", line 3, in setup'
    assert lines[5] == "    return 1 / 0  # helper fails"
    assert lines[-1] == "ZeroDivisionError: division by zero"
    assert_nothing_internal(done.stderr, tmp_path)


def test_a_task_traceback_names_the_job_file_and_shows_its_lines(tmp_path: Path) -> None:
    job = job_file(tmp_path / "jobs", """
        def check(x):
            if x == 3:
                raise KeyError(f"key {x}")  # the failing line
            return x

        def main(cluster):
            return list(cluster.map(check, range(5)))
    """)
    # A decoy of the same name where linecache would look for "job.py" (the cwd): the
    # traceback must show the lines of the job that ran.
    job_file(tmp_path, "\n\n\n# not this line\n")
    done = run(tmp_path, job)
    assert done.returncode == 1 and done.stdout == ""
    assert '  File "job.py", line 4, in check\n' in done.stderr
    assert '    raise KeyError(f"key {x}")  # the failing line\n' in done.stderr
    assert "not this line" not in done.stderr
    assert_nothing_internal(done.stderr, tmp_path)


# --- results that cannot be sent back ------------------------------------------------------


def test_an_unsendable_result_names_the_class_and_the_job_file(tmp_path: Path) -> None:
    job = job_file(tmp_path / "jobs", """
        class Point:
            def __init__(self, x):
                self.x = x

        def make_point(x):
            return Point(x)

        def main(cluster):
            return cluster.submit(make_point, 1).result()
    """, name="shapes.py")
    done = run(tmp_path, job)
    assert done.returncode == 1 and done.stdout == ""
    lines = [line for line in done.stderr.splitlines() if not line.startswith("p2pcluster: ")]
    assert lines[0].startswith("p2pcluster run: a task failed on peer ")
    assert lines[1].startswith("p2pcluster.UnsendableResult: the result of make_point cannot "
                               "be sent back: it is a Point from shapes.py, and results travel "
                               "as CBOR")
    assert lines[1].endswith("To fix it, return lists, dicts, str, bytes or numbers instead "
                             "(for an object of your own, its fields, such as vars(value)), "
                             "and rebuild the object where you use it.")
    assert len(lines) == 2  # no traceback: no line of the task is at fault
    for wrong in ("SubmitError", "p2pjob_", "Traceback", "_values.py", "_worker_main.py"):
        assert wrong not in done.stderr, wrong


def test_main_can_catch_an_unsendable_result(tmp_path: Path) -> None:
    job = job_file(tmp_path, """
        import p2pcluster

        class Point:
            pass

        def points(n):
            return {Point() for _ in range(n)}

        def main(cluster):
            try:
                list(cluster.map(points, [2]))
            except p2pcluster.UnsendableResult as e:
                return [isinstance(e, TypeError), e.type_name, e.remote_message]
    """)
    done = run(tmp_path, job)
    assert done.returncode == 0, done.stderr
    is_type_error, type_name, message = json.loads(done.stdout)
    assert is_type_error and type_name == "p2pcluster.UnsendableResult"
    assert message.startswith("the result of points cannot be sent back: it is a set "
                              "containing a Point from job.py")
