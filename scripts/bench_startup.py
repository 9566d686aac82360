"""How long `p2pcluster run` of a one-task job takes from the shell, beside `python -c pass`.

    python scripts/bench_startup.py [--json] [--repeat 10]

Each figure is the wall time of a whole process, from launch until it exits, measured in
interleaved rounds (one of each per round) so that the machine's noise falls on all alike:

- ``python_s``: ``python -c pass``, the floor any Python command pays;
- ``run_alone_s``: ``python -m p2pcluster run one_task.py`` with no daemon: the ephemeral
  peer starts (mDNS included), its workers start, the one task runs, the peer leaves
  (target <= 0.8 s);
- ``run_via_daemon_s``: the same job while a ``p2pcluster join`` daemon of the cluster runs:
  ``run`` submits through its control socket and starts no peer of its own;
- ``members_s``: ``p2pcluster members`` against that daemon.

Medians, with the minimum and maximum beside them. With root and iproute2, everything runs
in a network namespace of its own (scripts/netns_lan.py), mDNS on as a user has it, and no
packet leaves the machine; otherwise on loopback with ``--no-mdns`` (the JSON says which).
Python bytecode is compiled first, as an installed package has it. Fresh XDG directories and
a fresh secret: nothing of this machine's own cluster is touched.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import netns_lan  # noqa: E402

JOB = '''\
def square(x):
    return x * x


def main(cluster):
    return cluster.submit(square, 7).result()
'''
TARGET_RUN_ALONE_S = 0.8
Launcher = Callable[[Sequence[str]], list[str]]


def _log(message: str) -> None:
    print(f"bench_startup: {message}", file=sys.stderr, flush=True)


def environment(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("P2PCLUSTER_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(XDG_RUNTIME_DIR=str(tmp / "run"), XDG_CACHE_HOME=str(tmp / "cache"),
               XDG_CONFIG_HOME=str(tmp / "config"), PYTHONPATH=str(ROOT))
    return env


def timed(argv: list[str], env: dict[str, str], cwd: Path, expect: str | None = None
          ) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or (expect is not None and done.stdout.strip() != expect):
        raise RuntimeError(f"{' '.join(argv[-4:])} exited {done.returncode}, printed "
                           f"{done.stdout.strip()[:80]!r}: {done.stderr.strip()[-400:]}")
    return elapsed


@contextlib.contextmanager
def place(tmp: Path) -> Iterator[tuple[Launcher, list[str], str]]:
    """How to launch a command, the options that keep a peer there, and what the place is."""
    reason = netns_lan.available()
    if reason is None:
        with netns_lan.VirtualLan(1, prefix=f"bs{os.getpid() % 10000}") as lan:
            yield (lambda argv: lan.command(1, argv)), [], "network namespace, mDNS on"
        return
    _log(f"no network namespace ({reason}): loopback, mDNS off")
    yield list, ["--no-mdns", "--preset", "local"], "loopback, no mDNS"


@contextlib.contextmanager
def daemon(launch: Launcher, base: list[str], env: dict[str, str], tmp: Path,
           common: list[str]) -> Iterator[None]:
    """A `p2pcluster join` of the cluster, ready on its control socket."""
    log = (tmp / "daemon.log").open("w")
    proc = subprocess.Popen(launch([*base, "join", *common, "--workers", "2", "--port", "0",
                                    "--log-level", "warning"]),
                            env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(launch([*base, "members", *common[:2]]), env=env, cwd=tmp,
                             capture_output=True, check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start: {(tmp / 'daemon.log').read_text()}")
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def measure(repeat: int) -> dict[str, Any]:
    compileall.compile_dir(str(ROOT / "p2pcluster"), quiet=1)
    samples: dict[str, list[float]] = {"python_s": [], "run_alone_s": [],
                                       "run_via_daemon_s": [], "members_s": []}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as name, \
            place(Path(name)) as (launch, options, where):
        tmp = Path(name)
        env = environment(tmp)
        (tmp / "one_task.py").write_text(JOB)
        secret = tmp / "secret"
        subprocess.run([sys.executable, "-m", "p2pcluster", "secret", "--new", "--secret-file",
                        str(secret)], env=env, check=True, capture_output=True)
        common = ["--cluster", f"startup{os.getpid()}", "--secret-file", str(secret), *options]
        base = [sys.executable, "-m", "p2pcluster"]
        python = launch([sys.executable, "-c", "pass"])
        run = launch([*base, "run", *common, "--quiet", "one_task.py"])
        timed(run, env, tmp, "49")  # the first run creates the cache directories
        for rnd in range(repeat):
            _log(f"round {rnd + 1}/{repeat}: alone")
            samples["python_s"].append(timed(python, env, tmp))
            samples["run_alone_s"].append(timed(run, env, tmp, "49"))
        with daemon(launch, base, env, tmp, common):
            members = launch([*base, "members", *common[:2]])
            timed(run, env, tmp, "49")
            for rnd in range(repeat):
                _log(f"round {rnd + 1}/{repeat}: through the daemon")
                samples["run_via_daemon_s"].append(timed(run, env, tmp, "49"))
                samples["members_s"].append(timed(members, env, tmp))
    return report(samples, where, repeat)


def report(samples: dict[str, list[float]], where: str, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, values in samples.items():
        out[key] = round(statistics.median(values), 3)
        out[f"{key}_min"] = round(min(values), 3)
        out[f"{key}_max"] = round(max(values), 3)
    out["run_alone_minus_python_s"] = round(out["run_alone_s"] - out["python_s"], 3)
    out["targets"] = {"run_alone_s <= 0.8": out["run_alone_s"] <= TARGET_RUN_ALONE_S}
    out["where"] = where
    out["repeat"] = repeat
    out["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                      "platform": platform.platform()}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeat", type=int, default=10, help="rounds (default 10)")
    args = parser.parse_args(argv)
    figures = measure(args.repeat)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
