"""The import scan: what ships with a job by itself, and which distributions it needs."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from p2pcluster._autoship import AutoShip, scan_imports
from p2pcluster._jobs import CodeRegistry


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def job_dir(tmp_path: Path) -> Path:
    write(tmp_path / "job.py", "import os, json\nimport helper\nfrom shapes import area\n"
          "import cbor2\n\ndef f():\n    import trio\n    import nosuchmodule_p2p\n")
    write(tmp_path / "helper.py", "import zeroconf\nfrom deeper import x\n")
    write(tmp_path / "deeper.py", "x = 1\n")
    write(tmp_path / "shapes" / "__init__.py", "")
    write(tmp_path / "shapes" / "area.py", "from . import units\nimport cryptography\n")
    write(tmp_path / "shapes" / "units.py", "")
    write(tmp_path / "unused.py", "")
    return tmp_path / "job.py"


def test_the_scan_follows_local_imports_and_names_distributions(tmp_path: Path) -> None:
    found = scan_imports(job_dir(tmp_path))
    assert [p.name for p in found.local] == ["helper.py", "shapes", "deeper.py"]
    assert set(found.dists) == {"cbor2", "trio", "zeroconf", "cryptography"}
    assert found.unresolved == ("nosuchmodule_p2p",)


def test_autoship_bundles_says_what_shipped_and_hints_at_include(tmp_path: Path) -> None:
    lines: list[str] = []
    shipped = AutoShip(2**20, [], lines.append).scan(job_dir(tmp_path))
    assert [p.name for p, _ in shipped] == ["helper.py", "shapes", "deeper.py"]
    assert sorted(f for _, b in shipped for f, _ in b.files) == [
        "deeper.py", "helper.py", "shapes/__init__.py", "shapes/area.py", "shapes/units.py"]
    assert lines[0].startswith("p2pcluster: job.py imports nosuchmodule_p2p, which is not "
                               "found here;") and "--include" in lines[0]
    assert lines[1].startswith("p2pcluster: shipping helper.py, shapes/, deeper.py with "
                               "job.py (")
    assert len(lines) == 2


def test_autoship_respects_the_limit_and_explicit_includes(tmp_path: Path) -> None:
    job = job_dir(tmp_path)
    write(tmp_path / "helper.py", "import deeper\n" + "# padding\n" * 400)
    lines: list[str] = []
    shipped = AutoShip(1000, [tmp_path / "shapes"], lines.append).scan(job)
    assert [p.name for p, _ in shipped] == ["deeper.py"]
    assert any("not shipping" in line and "helper.py" in line
               and "auto_include_limit" in line for line in lines), lines
    lines.clear()
    assert AutoShip(0, [], lines.append).scan(job) == []


def test_the_registry_ships_them_as_includes_and_records_the_needs(tmp_path: Path) -> None:
    from p2pcluster._bundles import bundle_file

    job = job_dir(tmp_path)
    registry = CodeRegistry(say=lambda line: None, requires=["gpu"])
    registry.add_job_module("p2pjob_x", bundle_file(job), job)
    needs = registry.needs(["bigmem"])
    assert needs.python == ".".join(map(str, sys.version_info[:3]))
    assert {d.name for d in needs.dists} == {"cbor2", "trio", "zeroconf", "cryptography"}
    assert all(d.version for d in needs.dists)
    assert needs.tags == ("bigmem", "gpu") and not needs.strict


def test_a_distribution_outside_site_packages_is_a_distribution(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "target"  # as `pip install --target` or PYTHONPATH leave it
    write(dist / "p2punitdist" / "__init__.py", "")
    write(dist / "p2punitdist-1.2.3.dist-info" / "METADATA",
          "Metadata-Version: 2.1\nName: p2punitdist\nVersion: 1.2.3\n")
    write(dist / "p2punitdist-1.2.3.dist-info" / "top_level.txt", "p2punitdist\n")
    monkeypatch.syspath_prepend(str(dist))
    job = write(tmp_path / "job" / "job.py", "import p2punitdist\nimport helper\n")
    write(tmp_path / "job" / "helper.py", "")
    found = scan_imports(job)
    assert found.dists == ("p2punitdist",)
    assert [p.name for p in found.local] == ["helper.py"]


def test_the_distributions_are_read_once_until_a_path_directory_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata
    import os

    from p2pcluster import _autoship

    reads: list[int] = []
    real = importlib.metadata.packages_distributions

    def counted() -> Mapping[str, list[str]]:
        reads.append(1)
        return real()

    monkeypatch.setattr(importlib.metadata, "packages_distributions", counted)
    monkeypatch.setattr(_autoship, "_DISTS", {})
    dist = tmp_path / "target"
    dist.mkdir()
    monkeypatch.syspath_prepend(str(dist))
    first = _autoship._packages_distributions()
    assert _autoship._packages_distributions() is first and len(reads) == 1
    assert "p2pnewdist" not in first
    # a distribution installed since, as pip leaves it: its directory changes
    write(dist / "p2pnewdist" / "__init__.py", "")
    write(dist / "p2pnewdist-1.0.dist-info" / "METADATA",
          "Metadata-Version: 2.1\nName: p2pnewdist\nVersion: 1.0\n")
    write(dist / "p2pnewdist-1.0.dist-info" / "top_level.txt", "p2pnewdist\n")
    then = os.stat(dist).st_mtime_ns
    os.utime(dist, ns=(then, then + 10**9))  # (a clock tick later, whatever the clock's grain)
    assert _autoship._packages_distributions()["p2pnewdist"] == ["p2pnewdist"]
    assert len(reads) == 2
    assert "p2pnewdist" in _autoship._packages_distributions() and len(reads) == 2


async def test_a_request_that_reads_the_disk_is_built_off_the_trio_thread(
        tmp_path: Path) -> None:
    import threading

    registry = CodeRegistry(say=lambda line: None)
    threads: list[threading.Thread] = []
    build = registry.request

    def request(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return build(*args, **kwargs)

    registry.request = request  # type: ignore[method-assign]
    assert registry.cold(len)  # the first: it scans __main__'s imports
    await registry.request_in_trio(len, [b"\x80"])
    assert not registry.cold(len) and registry.cold(len, requires=["gpu"])
    await registry.request_in_trio(len, [b"\x80"])
    await registry.request_in_trio(len, [b"\x80"], requires=["gpu"])
    assert threads[0] is not threading.current_thread()
    assert threads[1] is threading.current_thread()
    assert threads[2] is not threading.current_thread()
    assert not registry.cold(len, requires=["gpu"])
