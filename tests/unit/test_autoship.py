"""The import scan: what ships with a job by itself, and which distributions it needs."""

from __future__ import annotations

import sys
from pathlib import Path

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
