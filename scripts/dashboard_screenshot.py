"""Make docs/dashboard.png from a real run: three `p2pcluster join` daemons on a virtual LAN
of network namespaces, a job submitted at h1, and h2's dashboard in headless chromium.

    sudo .venv/bin/python scripts/dashboard_screenshot.py [--out docs/dashboard.png]

Needs root, iproute2 (scripts/netns_lan.py), Debian's chromium, and the dashboard extra.
The job (written to a temporary directory) runs 240 tasks of 0.1 to 0.5 s that print a line
each; the screenshot is taken once the job is about half done, with its detail open.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
SECRET = "GuR6eQZe3E1ItJBMaDy2lDNPYRd-8vW9mzOQgV1L2kM"
JOB = '''\
import random, time

def simulate(seed):
    """One Monte Carlo batch of a made-up model."""
    rng = random.Random(seed)
    seconds = rng.uniform(0.1, 0.5)
    time.sleep(seconds)
    print(f"batch {seed}: {seconds:.3f} s")
    return seconds

def main(cluster, n="240"):
    return sum(cluster.map(simulate, range(int(n))))
'''
HALF_DONE = """(() => {
  const peers = document.querySelectorAll('#members tbody tr .state-alive').length;
  const text = document.querySelector('#jobs tbody tr .text');
  const done = text ? parseInt(text.textContent) : 0;
  return peers === 3 && done >= 120 && document.querySelectorAll('#stream-labels div').length;
})()"""
OPEN_DETAIL = "document.querySelector('#jobs tbody tr').click()"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()
    netns_lan, headless = _load("netns_lan"), _load("headless")
    if (why := netns_lan.available()) is not None or headless.find_chromium() is None:
        print(f"cannot run: {why or 'no chromium (apt-get install chromium)'}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="p2p-shot-"))
    (work / "montecarlo.py").write_text(JOB)

    def env(host: int) -> dict[str, str]:
        for sub in ("run", "config", "cache"):
            (work / f"{sub}{host}").mkdir(mode=0o700, exist_ok=True)
        return {**os.environ, "P2PCLUSTER_SECRET": SECRET, "PYTHONPATH": str(ROOT),
                "XDG_RUNTIME_DIR": str(work / f"run{host}"),
                "XDG_CONFIG_HOME": str(work / f"config{host}"),
                "XDG_CACHE_HOME": str(work / f"cache{host}")}

    with netns_lan.VirtualLan(3, prefix="shot") as lan:
        for host in (1, 2, 3):
            lan.popen(host, [sys.executable, "-m", "p2pcluster", "join", "--name",
                             f"lab{host}", "--workers", "2", "--tag", "gpu" if host == 3
                             else "cpu"], env=env(host), stdout=subprocess.DEVNULL,
                      stderr=(work / f"lab{host}.log").open("w"))
        time.sleep(6)
        job = lan.popen(1, [sys.executable, "-m", "p2pcluster", "run", "--daemon",
                            str(work / "montecarlo.py")], env=env(1),
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        shot = work / "dashboard.png"
        result = lan.run(2, [sys.executable, str(ROOT / "scripts" / "headless.py"),
                             "http://127.0.0.1:8797/", "--until", HALF_DONE, "--timeout", "60",
                             "--after", OPEN_DETAIL, "--settle", "2", "--size", "1400x1100",
                             "--screenshot", str(shot)], env=env(2), timeout=120)
        job.wait(timeout=120)
    report = json.loads(result.stdout or "{}")
    if not report.get("ok") or report.get("errors"):
        print(f"the page was not ready: {report.get('errors')}\n{result.stderr}",
              file=sys.stderr)
        return 1
    args.out.write_bytes(shot.read_bytes())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
