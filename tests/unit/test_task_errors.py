"""A failed task's error, as `unpack` raises it: also an instance of the original class when
this process can name that class without importing anything."""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Iterator

import pytest

from p2pcluster import P2PClusterError, PoisonTaskError, TaskError, TaskTimeoutError
from p2pcluster._errors import original_class
from p2pcluster._jobs import unpack
from p2pcluster._proto.messages import TaskStatus
from p2pcluster._values import encode_error

TRACEBACK = 'Traceback (most recent call last):\n  File "job.py", line 3, in f\nValueError: boom\n'


def failed(type_name: str, message: str = "boom", status: int = TaskStatus.ERROR,
           peer: str = "lab2") -> BaseException:
    with pytest.raises(TaskError) as info:
        unpack(status, encode_error(type_name, message, TRACEBACK), peer)
    return info.value


def test_a_remote_value_error_is_caught_by_except_value_error() -> None:
    try:
        unpack(TaskStatus.ERROR, encode_error("ValueError", "boom 7", TRACEBACK), "lab2")
    except ValueError as e:
        error = e
    assert isinstance(error, TaskError) and isinstance(error, P2PClusterError)
    assert error.args == ("boom 7",)
    assert (error.type_name, error.remote_message, error.remote_traceback, error.peer) == (
        "ValueError", "boom 7", TRACEBACK, "lab2")
    text = str(error)
    assert text.startswith("ValueError: boom 7 (on peer lab2)")
    assert "Remote traceback:\n" + TRACEBACK.rstrip() in text


def test_the_combined_class_is_made_once_and_named_after_both() -> None:
    first, second = failed("ZeroDivisionError"), failed("ZeroDivisionError", "other")
    assert type(first) is type(second)
    assert type(first).__name__ == "TaskError[ZeroDivisionError]"
    assert isinstance(first, ArithmeticError)


@pytest.mark.parametrize("name", ["KeyError", "OSError", "FileNotFoundError", "RuntimeError",
                                  "NotImplementedError", "RecursionError", "TimeoutError"])
def test_awkward_builtins_combine_and_keep_their_text(name: str) -> None:
    error = failed(name, "it broke")
    assert isinstance(error, getattr(__import__("builtins"), name))
    assert error.args == ("it broke",)
    assert str(error).startswith(f"{name}: it broke (on peer lab2)")  # not KeyError's repr


@pytest.mark.parametrize("name", ["UnicodeDecodeError", "ExceptionGroup"])
def test_classes_that_need_more_than_a_message_stay_plain(name: str) -> None:
    error = failed(name)
    assert type(error) is TaskError
    assert error.type_name == name and error.args == ("boom",)


@pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt", "GeneratorExit",
                                  "StopIteration", "StopAsyncIteration",
                                  "p2pcluster._errors.TaskError", "NoSuchBuiltin"])
def test_never_mixed_in(name: str) -> None:
    assert type(failed(name)) is TaskError
    assert original_class(name) is None


@pytest.fixture
def job_module() -> Iterator[types.ModuleType]:
    """A module as a job file is loaded: under its p2pjob_ name, in sys.modules."""
    module = types.ModuleType("p2pjob_0123456789abcdef")
    exec("class MyError(Exception):\n    pass\n"
         "class Outer:\n    class Inner(LookupError):\n        pass\n"
         "class Needy(Exception):\n    def __init__(self, code, detail):\n"
         "        super().__init__(code, detail)\n", module.__dict__)
    for cls in (module.MyError, module.Outer, module.Needy):
        cls.__module__ = module.__name__
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def test_a_class_of_a_loaded_module_resolves(job_module: types.ModuleType) -> None:
    error = failed("p2pjob_0123456789abcdef.MyError", "mine")
    assert isinstance(error, job_module.MyError) and isinstance(error, TaskError)
    nested = failed("p2pjob_0123456789abcdef.Outer.Inner")
    assert isinstance(nested, job_module.Outer.Inner) and isinstance(nested, LookupError)
    assert type(failed("p2pjob_0123456789abcdef.Needy")) is TaskError  # wants two arguments
    assert type(failed("p2pjob_0123456789abcdef.Missing")) is TaskError


def test_nothing_is_imported_to_resolve_a_name() -> None:
    assert "mailbox" not in sys.modules
    assert type(failed("mailbox.Error")) is TaskError
    assert "mailbox" not in sys.modules


def test_a_module_getattr_is_not_called(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    module = types.ModuleType("lazy_errors_module")
    module.__getattr__ = lambda name: calls.append(name) or ValueError  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert type(failed("lazy_errors_module.Boom")) is TaskError
    assert calls == []


def test_poison_and_timeout_keep_their_own_classes() -> None:
    poison = failed("PoisonTask", "crashed", status=TaskStatus.POISON)
    timeout = failed("TimeoutError", "too slow", status=TaskStatus.TIMEOUT)
    assert type(poison) is PoisonTaskError and type(timeout) is TaskTimeoutError
    assert isinstance(timeout, TimeoutError) and timeout.args == ("too slow",)


def test_an_unreadable_report_is_still_an_error() -> None:
    with pytest.raises(TaskError) as info:
        unpack(TaskStatus.ERROR, b"\xff", "lab2")
    assert type(info.value) is TaskError and info.value.type_name == "Error"


def test_errors_survive_pickling() -> None:
    error = failed("KeyError", "k")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and isinstance(again, KeyError)
    assert (again.args, again.peer, again.remote_traceback) == (("k",), "lab2", TRACEBACK)
    poison = pickle.loads(pickle.dumps(failed("PoisonTask", status=TaskStatus.POISON)))
    assert type(poison) is PoisonTaskError
