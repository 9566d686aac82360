"""Code shipping without pickle: bundles, function references, CBOR values, the cache, loading."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import ipaddress
import json
import math
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcluster._bundles import CodeBundle, bundle_file, bundle_tree, job_module_name
from p2pcluster._codecache import CodeCache
from p2pcluster._errors import (
    DecodeError,
    MessageTooLarge,
    ProtocolError,
    SubmitError,
    UnsendableResult,
)
from p2pcluster._loader import load_function, load_job_module, remember_sources
from p2pcluster._refs import FunctionRef, function_ref
from p2pcluster._values import decode_call, decode_value, encode_call, encode_value

# --------------------------------------------------------------------------- bundles

_segment = st.text(st.characters(blacklist_characters="/\\\0", blacklist_categories=["Cs"]),
                   min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))
_paths = st.lists(_segment, min_size=1, max_size=3).map("/".join)


@st.composite
def bundles(draw: st.DrawFn) -> CodeBundle:
    files = draw(st.dictionaries(_paths, st.binary(max_size=64), max_size=8))
    paths = sorted(files)
    # drop any path that is also a directory of another one
    keep = [p for p in paths if not any(q.startswith(p + "/") for q in paths)]
    return CodeBundle(tuple((p, files[p]) for p in keep))


@given(bundles())
def test_bundle_round_trip(bundle: CodeBundle) -> None:
    data = bundle.encode()
    again = CodeBundle.decode(data)
    assert again == bundle
    assert again.digest == bundle.digest


def test_digest_is_stable() -> None:
    bundle = CodeBundle((("a.py", b"x = 1\n"), ("pkg/__init__.py", b"")))
    # Pinned: a change of encoding would orphan every cache and break mixed-version clusters.
    assert bundle.encode() == cbor2.dumps([["a.py", b"x = 1\n"], ["pkg/__init__.py", b""]])
    assert bundle.digest == CodeBundle(bundle.files).digest
    assert len(bundle.digest) == 64
    assert bundle.digest != CodeBundle((("a.py", b"x = 2\n"),)).digest


@pytest.mark.parametrize("files", [
    [["/etc/passwd", b""]],
    [["../up.py", b""]],
    [["a/../b.py", b""]],
    [["a/./b.py", b""]],
    [["a\\b.py", b""]],
    [["", b""]],
    [["a//b.py", b""]],
    [["a/", b""]],
    [["a\0b", b""]],
    [["a.py", b""], ["a.py", b""]],       # duplicate
    [["b.py", b""], ["a.py", b""]],       # unsorted
    [["a", b""], ["a/b.py", b""]],        # file and directory
    [["a.py", "text"]],                   # content not bytes
    [[1, b""]],
    [["a.py"]],
    {"a.py": b""},
])
def test_bundle_decode_refuses(files: Any) -> None:
    with pytest.raises(DecodeError):
        CodeBundle.decode(cbor2.dumps(files))


def test_bundle_decode_refuses_malformed_and_oversized() -> None:
    good = CodeBundle((("a.py", b"1"),)).encode()
    with pytest.raises(DecodeError):
        CodeBundle.decode(good + b"\x00")  # trailing bytes
    with pytest.raises(DecodeError):
        CodeBundle.decode(good[:-1])
    with pytest.raises(DecodeError):
        CodeBundle.decode(cbor2.dumps(cbor2.CBORTag(258, [])))  # a tag
    with pytest.raises(DecodeError):  # not canonical: a 1-byte length written in 2 bytes
        CodeBundle.decode(b"\x81\x82\x64a.py\x58\x01" + b"1")
    with pytest.raises(MessageTooLarge):
        CodeBundle.decode(CodeBundle((("a", b""), ("b", b""))).encode(), max_files=1)
    with pytest.raises(MessageTooLarge):
        CodeBundle.decode(CodeBundle((("a", b"12345"),)).encode(), max_bytes=4)
    assert issubclass(MessageTooLarge, ProtocolError)


def test_bundle_constructor_checks_paths() -> None:
    with pytest.raises(ValueError, match=r"\.\."):
        CodeBundle((("../x", b""),))


def test_bundle_file_and_tree(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text("def main(c): pass\n")
    assert bundle_file(job).files == (("job.py", b"def main(c): pass\n"),)
    assert bundle_tree(job) == bundle_file(job)
    pkg = tmp_path / "mylib"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "m.py").write_text("X = 1\n")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"junk")
    (pkg / "stale.pyc").write_bytes(b"junk")
    (pkg / ".git").mkdir()
    (pkg / ".git" / "HEAD").write_text("ref")
    assert [p for p, _ in bundle_tree(pkg).files] == ["mylib/__init__.py", "mylib/sub/m.py"]


def test_bundle_missing_path_is_a_submit_error(tmp_path: Path) -> None:
    with pytest.raises(SubmitError, match="no such file"):
        bundle_file(tmp_path / "nope.py")
    with pytest.raises(SubmitError, match="no such file or directory"):
        bundle_tree(tmp_path / "nope")
    with pytest.raises(SubmitError, match="not a file"):
        bundle_file(tmp_path)


def test_job_module_name() -> None:
    assert job_module_name("ab" * 32) == "p2pjob_" + "ab" * 8


# --------------------------------------------------------------------------- references


def module_level(x: int) -> int:
    return x + 1


class Holder:
    def method(self) -> None: ...

    @classmethod
    def make(cls) -> Holder:
        return cls()

    @staticmethod
    def static() -> int:
        return 1


def test_function_ref_of_module_functions_and_builtins() -> None:
    assert function_ref(module_level) == FunctionRef(__name__, "module_level")
    assert function_ref(math.sqrt) == FunctionRef("math", "sqrt")
    assert function_ref(json.dumps) == FunctionRef("json", "dumps")
    assert function_ref(Holder.static) == FunctionRef(__name__, "Holder.static")
    assert function_ref(Holder.make) == FunctionRef(__name__, "Holder.make")
    assert function_ref(dt.datetime.fromtimestamp) == FunctionRef(
        "datetime", "datetime.fromtimestamp")
    ref = function_ref(module_level, includes=["c" * 64])
    assert ref.includes == ("c" * 64,)


def test_function_ref_refuses_a_lambda() -> None:
    with pytest.raises(SubmitError, match="lambda") as info:
        function_ref(lambda x: x)
    assert "def" in str(info.value) and "--include" in str(info.value)


def test_function_ref_refuses_closures_partials_and_bound_methods() -> None:
    def inner(x: int) -> int:
        return x

    with pytest.raises(SubmitError, match="inside another function"):
        function_ref(inner)
    with pytest.raises(SubmitError, match=r"partial.*task arguments"):
        function_ref(functools.partial(module_level, 1))
    with pytest.raises(SubmitError, match="bound to a Holder object"):
        function_ref(Holder().method)
    with pytest.raises(SubmitError, match="bound to a list"):
        function_ref([].append)
    with pytest.raises(SubmitError, match="not callable"):
        function_ref(3)  # type: ignore[arg-type]


def test_function_ref_refuses_what_does_not_resolve() -> None:
    def original(x: int) -> int:
        return x

    original.__qualname__ = "module_level"  # claims a name that leads elsewhere
    with pytest.raises(SubmitError, match="does not lead back"):
        function_ref(original)


def test_function_ref_of_main(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    main = types.ModuleType("__main__")
    exec("def task(x):\n    return x\n", main.__dict__)
    monkeypatch.setitem(sys.modules, "__main__", main)
    with pytest.raises(SubmitError, match=r"__main__.*job file.*--include"):
        function_ref(main.task)
    digest = "d" * 64
    ref = function_ref(main.task, job_modules={"__main__": digest})
    assert ref == FunctionRef(job_module_name(digest), "task", digest)


def test_function_ref_wire_round_trip() -> None:
    digest = "e" * 64
    ref = FunctionRef(job_module_name(digest), "A.f", digest, ("f" * 64,))
    wire = ref.to_wire()
    assert FunctionRef.from_wire(wire) == ref
    assert FunctionRef.from_wire(cbor2.loads(cbor2.dumps(wire))) == ref  # lists, not tuples
    assert FunctionRef.from_wire(FunctionRef("math", "sqrt").to_wire()) == FunctionRef(
        "math", "sqrt")


@pytest.mark.parametrize("wire", [
    ("os", "system"),
    ("os;rm", "f", None, ()),
    ("m", "a.<locals>.f", None, ()),
    ("m", "f", "../../etc", ()),
    ("p2pjob_" + "0" * 16, "f", "a" * 64, ()),   # job digest that is not the module's
    ("m", "f", None, ("../x",)),
    ("m", "f", None, "abc"),
    (1, "f", None, ()),
])
def test_function_ref_from_wire_refuses(wire: Any) -> None:
    with pytest.raises(DecodeError):
        FunctionRef.from_wire(wire)


# --------------------------------------------------------------------------- values

TZ = dt.timezone(dt.timedelta(hours=2))
STANDARD = [
    None, True, 0, -1, 2**70, -(2**70), 1.5, "text", b"\x00bytes",
    dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=TZ),
    dt.datetime(2024, 5, 6, tzinfo=dt.UTC),
    dt.date(2024, 5, 6),
    Decimal("1.10"), Decimal("-1E+30"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Fraction(1, 3),
    {1, 2, 3}, frozenset({"a"}),
    complex(1, -2),
    ipaddress.ip_address("10.1.2.3"), ipaddress.ip_network("fd00::/8"),
    {"nested": [1, {"deep": {b"k": Decimal("2.5")}}], "when": dt.datetime(2020, 1, 1, tzinfo=TZ)},
]


@pytest.mark.parametrize("value", STANDARD, ids=lambda v: type(v).__name__)
def test_standard_types_round_trip(value: Any) -> None:
    args, kwargs = decode_call(encode_call((value,), {"k": value}))
    assert args == (value,) and kwargs == {"k": value}
    assert type(args[0]) is type(value) or isinstance(value, frozenset)
    assert decode_value(encode_value(value)) == value


def test_datetime_keeps_its_offset() -> None:
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=TZ)
    back = decode_value(encode_value(when))
    assert back == when and back.utcoffset() == dt.timedelta(hours=2)


def test_tuples_come_back_as_lists() -> None:
    args, _ = decode_call(encode_call(((1, (2, 3)),), {}))
    assert args == ([1, [2, 3]],)


def test_dict_order_is_kept() -> None:
    value = {"b": 1, "a": 2}
    assert list(decode_value(encode_value(value))) == ["b", "a"]


class Opaque:
    pass


def test_encode_call_names_the_bad_argument() -> None:
    with pytest.raises(SubmitError) as info:
        encode_call((1, Opaque()), {})
    msg = str(info.value)
    assert "argument 1" in msg and "Opaque" in msg and "convert it" in msg
    with pytest.raises(SubmitError, match=r"keyword argument 'data'.*list containing.*Opaque"):
        encode_call((), {"ok": 1, "data": [1, Opaque()]})
    with pytest.raises(SubmitError, match=r"argument 0.*without a timezone.*tzinfo"):
        encode_call((dt.datetime(2024, 1, 1),), {})
    with pytest.raises(SubmitError, match=r"argument 0.*function.*module_level"):
        encode_call((module_level,), {})
    with open(os.devnull) as f, pytest.raises(SubmitError, match="open the file inside"):
        encode_call((f,), {})
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(SubmitError, match="argument 0"):
        encode_call((cyclic,), {})


def test_encode_value_refuses_odd_tags() -> None:
    import re

    for odd in (re.compile("a+"), cbor2.CBORTag(99, 1), cbor2.undefined):
        with pytest.raises(UnsendableResult, match="the result"):
            encode_value(odd)


@pytest.mark.parametrize("tag", [25, 28, 29, 35, 36, 256, 99, 55800])
def test_decode_refuses_odd_and_unknown_tags(tag: int) -> None:
    with pytest.raises(DecodeError):
        decode_value(cbor2.dumps(cbor2.CBORTag(tag, "x")))


@pytest.mark.parametrize("data", [
    b"", b"\xff", cbor2.dumps([1]), cbor2.dumps([[], {1: 2}]),
    cbor2.dumps({"args": []}), cbor2.dumps([{}, {}]),
    cbor2.dumps(cbor2.CBORTag(1, 10**30)),
])
def test_decode_call_refuses_malformed(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_call(data)


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary() | st.decimals(allow_nan=False) | st.fractions() | st.uuids()
    | st.datetimes(timezones=st.just(dt.UTC)),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
))
def test_values_round_trip(value: Any) -> None:
    assert decode_value(encode_value(value)) == value


@given(st.binary(max_size=64))
def test_decode_never_raises_anything_but_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_call(data)


# --------------------------------------------------------------------------- the cache


def test_cache_store_has_path(tmp_path: Path) -> None:
    cache = CodeCache(tmp_path / "cache")
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    bundle = CodeBundle((("pkg/__init__.py", b"A = 1\n"), ("pkg/sub/b.py", b"B = 2\n")))
    assert not cache.has(bundle.digest)
    where = cache.store(bundle)
    assert where == cache.path(bundle.digest) and cache.has(bundle.digest)
    stored = sorted(p.relative_to(where).as_posix() for p in where.rglob("*") if p.is_file())
    assert stored == ["pkg/__init__.py", "pkg/sub/b.py"]
    assert (where / "pkg/sub/b.py").read_bytes() == b"B = 2\n"
    assert cache.store(bundle) == where  # idempotent
    assert [p.name for p in cache.root.iterdir()] == [bundle.digest]  # no temp dirs left
    with pytest.raises(ValueError, match="digest"):
        cache.path("../../etc")


def test_cache_tightens_a_loose_directory(tmp_path: Path) -> None:
    root = tmp_path / "loose"
    root.mkdir(mode=0o777)
    root.chmod(0o777)
    CodeCache(root)
    assert root.stat().st_mode & 0o777 == 0o700


def test_cache_concurrent_writers(tmp_path: Path) -> None:
    cache = CodeCache(tmp_path)
    bundle = CodeBundle(tuple((f"m{i:03}.py", b"x" * 1000) for i in range(200)))
    errors: list[BaseException] = []

    def store() -> None:
        try:
            cache.store(bundle)
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=store) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(list(cache.path(bundle.digest).iterdir())) == 200
    assert [p.name for p in tmp_path.iterdir()] == [bundle.digest]


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert CodeCache.default_root() == tmp_path / "p2pcluster" / "code"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # ignored, as the XDG spec says
    assert CodeCache.default_root() == Path.home() / ".cache" / "p2pcluster" / "code"


# --------------------------------------------------------------------------- loading


@pytest.fixture
def clean_modules() -> Iterator[None]:
    """Undo what loading does to sys.path and sys.modules."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def _include(tmp_path: Path, cache: CodeCache, name: str, body: str) -> str:
    pkg = tmp_path / "src" / name
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(body)
    bundle = bundle_tree(pkg)
    cache.store(bundle)
    return bundle.digest


@pytest.mark.usefixtures("clean_modules")
def test_load_function_from_an_include(tmp_path: Path) -> None:
    cache = CodeCache(tmp_path / "cache")
    digest = _include(tmp_path, cache, "shipped_pkg_a", "def double(x):\n    return 2 * x\n")
    ref = FunctionRef("shipped_pkg_a", "double", includes=(digest,))
    fn = load_function(ref, str(cache.root))
    assert fn(21) == 42
    assert load_function(ref, str(cache.root)) is fn  # memoized
    assert sys.path[0] == str(cache.path(digest))


@pytest.mark.usefixtures("clean_modules")
def test_include_sets_do_not_leak_between_jobs(tmp_path: Path) -> None:
    """Two jobs ship different packages under one name: each sees its own."""
    cache = CodeCache(tmp_path / "cache")
    one = _include(tmp_path / "1", cache, "shipped_same", "def which():\n    return 1\n")
    two = _include(tmp_path / "2", cache, "shipped_same", "def which():\n    return 2\n")
    root = str(cache.root)
    assert load_function(FunctionRef("shipped_same", "which", includes=(one,)), root)() == 1
    assert load_function(FunctionRef("shipped_same", "which", includes=(two,)), root)() == 2
    assert str(cache.path(one)) not in sys.path
    assert load_function(FunctionRef("shipped_same", "which", includes=(one,)), root)() == 1


@pytest.mark.usefixtures("clean_modules")
def test_load_function_from_a_job_file(tmp_path: Path) -> None:
    cache = CodeCache(tmp_path / "cache")
    job = tmp_path / "job.py"
    job.write_text(
        "import sys\n"
        "def square(x):\n    return x * x\n"
        "class K:\n    @staticmethod\n    def name():\n        return __name__\n"
        "if __name__ == '__main__':\n    sys.exit('the main block must not run')\n"
    )
    bundle = bundle_file(job)
    cache.store(bundle)
    module = job_module_name(bundle.digest)
    ref = FunctionRef(module, "square", bundle.digest)
    assert load_function(ref, str(cache.root))(7) == 49
    assert load_function(FunctionRef(module, "K.name", bundle.digest), cache.root)() == module
    assert sys.modules[module].__file__ == str(cache.path(bundle.digest) / "job.py")


@pytest.mark.usefixtures("clean_modules")
def test_load_job_module_names_functions_by_digest(tmp_path: Path) -> None:
    cache = CodeCache(tmp_path / "cache")
    job = tmp_path / "myjob.py"
    job.write_text("def task(x):\n    return x\n\ndef main(cluster):\n    return task\n")
    bundle = bundle_file(job)
    module = load_job_module(bundle, cache)
    name = job_module_name(bundle.digest)
    assert module.__name__ == name and sys.modules[name] is module
    assert module.task.__module__ == name
    ref = function_ref(module.task, job_modules={name: bundle.digest})
    assert ref == FunctionRef(name, "task", bundle.digest)
    assert load_function(ref, cache.root) is module.task
    assert cache.has(bundle.digest)
    with pytest.raises(SubmitError, match="not this job's"):
        function_ref(module.task)


@pytest.mark.usefixtures("clean_modules")
def test_load_function_failures(tmp_path: Path) -> None:
    with pytest.raises(ImportError):
        load_function(FunctionRef("no_such_module_anywhere", "f"), str(tmp_path))
    with pytest.raises(AttributeError):
        load_function(FunctionRef("math", "no_such_function"), str(tmp_path))
    with pytest.raises(ImportError, match=r"one \.py file"):
        load_job_module(CodeBundle((("a.py", b""), ("b.py", b""))), CodeCache(tmp_path))


@pytest.mark.usefixtures("clean_modules")
def test_a_job_file_compiles_under_its_own_name_not_the_cache_path(tmp_path: Path) -> None:
    cache = CodeCache(tmp_path / "cache")
    job = tmp_path / "myjob.py"
    job.write_text("def task(x):\n    return 1 / x\n")
    bundle = bundle_file(job)
    module = load_job_module(bundle, cache, filename="jobs/myjob.py")
    assert module.task.__code__.co_filename == "jobs/myjob.py"
    assert module.__file__ == str(cache.path(bundle.digest) / "myjob.py")  # as before
    del sys.modules[module.__name__]
    ref = FunctionRef(module.__name__, "task", bundle.digest)
    assert load_function(ref, cache.root).__code__.co_filename == "myjob.py"  # as on a peer
    (tmp_path / "bad.py").write_text("x = (\n")
    with pytest.raises(SyntaxError) as info:
        load_job_module(bundle_file(tmp_path / "bad.py"), cache, filename="bad.py")
    assert info.value.filename == "bad.py"


@pytest.mark.usefixtures("clean_modules")
def test_remember_sources_shows_each_jobs_own_lines(tmp_path: Path) -> None:
    """Two versions of job.py in one process: each traceback shows its own lines."""
    import traceback

    cache = CodeCache(tmp_path / "cache")
    texts = []
    for version in (1, 2):
        (tmp_path / str(version)).mkdir()
        job = tmp_path / str(version) / "job.py"
        job.write_text(f"def task():\n    raise ValueError({version})  # version {version}\n")
        bundle = bundle_file(job)
        cache.store(bundle)
        fn = load_function(FunctionRef(job_module_name(bundle.digest), "task", bundle.digest),
                           cache.root)
        with pytest.raises(ValueError) as info:
            fn()
        remember_sources(info.value)
        texts.append("".join(traceback.format_exception(info.value)))
    assert '  File "job.py", line 2, in task\n    raise ValueError(1)  # version 1' in texts[0]
    assert '  File "job.py", line 2, in task\n    raise ValueError(2)  # version 2' in texts[1]


@pytest.mark.usefixtures("clean_modules")
def test_an_unsendable_result_names_the_class_and_its_job_file(tmp_path: Path) -> None:
    job = tmp_path / "shapes.py"
    job.write_text("import dataclasses\nclass Point:\n    pass\n"
                   "@dataclasses.dataclass\nclass Box:\n    side: int\n")
    module = load_job_module(bundle_file(job), CodeCache(tmp_path / "cache"), filename="a/s.py")
    with pytest.raises(UnsendableResult) as info:
        encode_value(module.Point(), what="the result of make")
    text = str(info.value)
    assert text.startswith("the result of make cannot be sent back: it is a Point from a/s.py,")
    assert "p2pjob_" not in text
    assert "To fix it, return lists, dicts, str, bytes or numbers instead" in text
    with pytest.raises(UnsendableResult, match=r"a set containing a Point from a/s\.py"):
        encode_value({module.Point()})
    with pytest.raises(UnsendableResult, match=r"return dataclasses\.asdict\(value\) instead"):
        encode_value(module.Box(1))
    assert issubclass(UnsendableResult, TypeError) and not issubclass(UnsendableResult,
                                                                       SubmitError)
