"""Moving data: NumPy arrays, shared inputs and large results, p2pcluster beside Dask.

    python scripts/bench_data.py [--json] [--quick] [--no-dask]

(``pip install -e '.[bench,numpy]'``.) Every figure comes from this one run on this machine:

- **p2pcluster**: this process's embedded ``Cluster`` with **no workers** (it owns the jobs,
  so every byte crosses a peer link), and one ``p2pcluster join --workers 2`` subprocess on
  127.0.0.1 (local preset, no mDNS, a fresh cluster name and secret).
- **Dask**: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` + ``Client``,
  started after p2pcluster's figures are taken.
- **D1**: 64 float64 arrays of 16 MB, one ``np.sum`` task each: GB/s of array bytes
  (``d1_gbps``; Dask ``Client.map`` over the same arrays held by the client,
  ``d1_dask_gbps``; each system first sums 4 other arrays of that size, untimed, so that
  neither is timed on what it sets up once), and
  ``d1_aead_limit_gbps``: one core's ChaCha20-Poly1305 seal then open of 256 MB in
  1 MiB chunks, into buffers allocated once, the limit the data issue names, measured just
  before and just after D1's first round and averaged (this VM's speed drifts by a third
  within a minute: a limit measured at the start of the run, as
  ``d1_aead_limit_measured_gbps`` also lists first, may come from a faster or slower
  minute than D1's); and
  ``d1_aes_gcm_limit_gbps``, the same with AES-256-GCM, which p2pcluster's streams use when
  both ends' CPUs have AES instructions. ``stream_cipher`` says which one D1's streams used
  (from the join peer's wire counters): the cost every byte p2pcluster moves pays.
- **D2**: one 256 MB array shared by 256 tasks that each sum a slice: the bytes the other peer
  received for it (``d2_bytes_per_peer``, from its ``statistics()``), the array's size
  (``d2_array_bytes``), and the wall time from ``share`` to the last result (``d2_wall_s``);
  Dask: ``scatter(..., broadcast=True)`` plus the same map (``d2_dask_wall_s``).
- **D3**: one 200 MB result back from the other peer: wall time (``d3_wall_s``), and peak
  RSS (``d3_peak_rss_mb``: this process, the owner, which runs D3 first, before it holds any
  other data; ``d3_remote_peak_rss_mb``: the join peer and its workers, summed).

Each system then runs D1 twice more on the same arrays: ``d1_rounds_gbps`` and
``d1_dask_rounds_gbps`` hold all three rounds; the first is D1's figure. They show what a
warm Dask does: from its third map on, its workers reuse the 16 MB buffers they freed
(glibc raises its mmap threshold once such a block is freed) instead of faulting in fresh
pages, and it runs nearly three times faster than in its first two.

``d1_machine_cpu_s`` and ``d1_dask_machine_cpu_s`` are the CPU seconds the whole machine
spent busy during each system's first D1 round (``/proc/stat``: user, system, interrupts),
and ``d1_cpu_bound_gbps`` and ``d1_dask_cpu_bound_gbps`` the GB/s each would reach if that
CPU time were spread over every core with none idle: the most that system's code could
reach on this machine, as it stands (its wall time can only approach the bound).

**Through the daemon** (how a lab's ``p2pcluster run`` goes where ``p2pcluster join``
runs): this process, as a client of the join peer's control socket
(``Cluster(daemon=True)``), sends D1's arrays again, and asks for D3's result again; the join
peer's own two workers run them. ``daemon_d1_gbps`` is GB/s of array bytes, and
``daemon_d1_vs_dask`` its ratio to ``d1_dask_gbps`` (Dask's client also holds the arrays,
and its two workers on this machine sum them, so the two do the same work; D1's own figure
is over a peer link instead); ``daemon_d3_wall_s`` the wall time of the 200 MB result;
``daemon_d1_cpu_s`` and ``daemon_d3_cpu_s`` the CPU seconds of ``[this client, the join
peer and its workers]``.

``d1_owner_peak_rss_mb`` is this process's peak RSS after D1 (it holds the 1 GiB of arrays
it submits). ``--quick`` shrinks everything (for a check that the script runs, not for
figures); ``--size KEY=N`` sets one size. ``d1_cpu_s``, ``d2_cpu_s`` and ``d3_cpu_s`` are
the CPU seconds (user + system) of each section (D1: its first round), ``[owner, join
peer and its workers]``, and ``d1_faults``, ``d2_faults`` and ``d3_faults`` their minor
page faults (each a fresh page the kernel zeroes and maps: a copy into new memory shows up
here): on a shared machine they say more about a change than wall-clock time. A system
that fails gets ``null`` figures and an entry in ``errors``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
WORK_FILE = SCRIPTS / "bench_data_work.py"
sys.path[:0] = [str(ROOT), str(SCRIPTS)]
import bench_data_work  # noqa: E402
import bench_tasks  # noqa: E402
from bench_tasks import free_port  # noqa: E402

READY_TIMEOUT = 60.0
#: Arrays of D1's size that each system sums before D1 (see :func:`warm_arrays`).
WARM_ARRAYS = 4
#: Times each system runs D1; its figure is the first (see the module's docstring).
D1_ROUNDS = 3
MB = 10**6
FULL = {"d1_count": 64, "d1_bytes": 16 * MB, "d2_bytes": 256 * MB, "d2_tasks": 256,
        "d3_bytes": 200 * MB, "aead_bytes": 256 * MB}
QUICK = {"d1_count": 8, "d1_bytes": MB, "d2_bytes": 8 * MB, "d2_tasks": 16,
         "d3_bytes": 4 * MB, "aead_bytes": 16 * MB}


def _log(message: str) -> None:
    print(f"bench_data: {message}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tree_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and minor page faults of ``pid`` and its live children
    so far."""
    cpu, faults = 0.0, 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    tick = os.sysconf("SC_CLK_TCK")
    for p in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick
            faults += int(fields[7])
    return cpu, faults


def own_usage() -> tuple[float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_minflt


class CpuClock:
    """CPU seconds and minor page faults (each a fresh page the kernel zeroes and maps) that
    this process (the owner) and the join peer's tree spend in a section."""

    def __init__(self, peer_pid: int) -> None:
        self.peer_pid = peer_pid
        self.start = (own_usage(), tree_usage(peer_pid))

    def _now(self) -> tuple[tuple[float, int], tuple[float, int]]:
        return own_usage(), tree_usage(self.peer_pid)

    def spent(self) -> tuple[float, float]:
        ours, theirs = self._now()
        return ours[0] - self.start[0][0], theirs[0] - self.start[1][0]

    def faults(self) -> tuple[int, int]:
        ours, theirs = self._now()
        return ours[1] - self.start[0][1], theirs[1] - self.start[1][1]


class MachineClock:
    """CPU seconds the whole machine spent busy (user, system, interrupts; not idle, I/O
    wait or steal) since it was made, from ``/proc/stat``; None where there is none."""

    def __init__(self) -> None:
        self.start = self._busy()

    @staticmethod
    def _busy() -> float | None:
        with contextlib.suppress(OSError, ValueError):
            ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
            return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
        return None

    def spent(self) -> float | None:
        now = self._busy()
        return None if now is None or self.start is None else now - self.start


def cpu_bound_gbps(arrays: list[Any], busy: float | None) -> float | None:
    """The GB/s a section would reach if the CPU time the machine spent on it (``busy``)
    were spread over every core with none idle: what its code could reach at best here."""
    cores = os.cpu_count() or 1
    return None if not busy else sum(a.nbytes for a in arrays) / (busy / cores) / 1e9


def tree_peak_rss_mb(pid: int) -> float:
    """VmHWM of ``pid`` and its children (a daemon and its worker processes), summed."""
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        with contextlib.suppress(OSError, StopIteration):
            status = Path(f"/proc/{p}/status").read_text().splitlines()
            total += int(next(x for x in status if x.startswith("VmHWM:")).split()[1]) / 1024
    return total


def aead_limit_gbps(nbytes: int, cipher: str = "chacha20-poly1305") -> float:
    """One core sealing then opening ``nbytes`` in 1 MiB chunks with ``cipher``
    (ChaCha20-Poly1305 or AES-256-GCM), each into a buffer allocated once
    (``encrypt_into``/``decrypt_into``): the cipher's own cost. (Sealing into a new buffer
    per chunk, as this script did before, measured 2.5x slower here: every 1 MiB output was
    fresh memory the kernel had to fault in.)"""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    aead = (AESGCM if cipher == "aes-256-gcm" else ChaCha20Poly1305)(os.urandom(32))
    chunk = os.urandom(2**20)
    sealed, opened = bytearray(len(chunk) + 16), bytearray(len(chunk))
    count = max(1, nbytes // len(chunk))
    nonce = bytes(12)
    start = time.perf_counter()
    for _ in range(count):
        aead.encrypt_into(nonce, chunk, None, sealed)
        aead.decrypt_into(nonce, sealed, None, opened)
    return count * len(chunk) / (time.perf_counter() - start) / 1e9


def kill_group(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class P2P:
    """The embedded owner (no workers) and the join peer (two workers)."""

    def __init__(self, stack: contextlib.ExitStack, tmp: Path) -> None:
        import p2pcluster
        from p2pcluster._secret import new_secret, write_secret_file

        secret = tmp / "secret"
        write_secret_file(secret, (new_secret(),))
        name = f"bench-data-{os.getpid()}-{secrets.token_hex(3)}"
        ours, theirs = free_port(), free_port()
        self.control = tmp / "peer.sock"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(tmp / "run"),
               "XDG_CACHE_HOME": str(tmp / "cache")}
        log = stack.enter_context((tmp / "join.log").open("w"))
        self.peer = subprocess.Popen(
            [sys.executable, "-m", "p2pcluster", "join", "--preset", "local", "--cluster",
             name, "--secret-file", str(secret), "--port", str(theirs), "--workers", "2",
             "--no-mdns", "--seed", f"127.0.0.1:{ours}", "--name", "bench-peer",
             "--control", str(self.control), "--log-level", "warning"],
            env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(kill_group, self.peer)
        config = p2pcluster.Config.local(
            cluster=name, secret_file=str(secret), seeds=(f"127.0.0.1:{theirs}",), workers=0,
            mdns=False, port=ours, node_name="bench-owner")
        self.cluster = stack.enter_context(
            p2pcluster.Cluster(config, include=[WORK_FILE], daemon=False))
        deadline = time.monotonic() + READY_TIMEOUT
        while "bench-peer" not in {m.name for m in self.cluster.members() if m.alive}:
            if self.peer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the join peer did not come up: "
                                   + (tmp / "join.log").read_text()[-400:])
            time.sleep(0.1)
        self.cluster.submit(bench_data_work.total, [1.0]).result(READY_TIMEOUT)  # warm

    def status(self) -> dict[str, Any]:
        """The join peer's answer to a ``status`` request on its control socket."""
        import trio

        from p2pcluster._control_client import request_daemon

        answer: dict[str, Any] = trio.run(request_daemon, self.control, "status")
        return answer

    def sharing(self) -> dict[str, int]:
        counters: dict[str, int] = self.status()["sharing"]
        return counters

    def stream_cipher(self) -> str:
        """The AEAD of the join peer's streams so far (its wire counters)."""
        wire = self.status()["wire"]
        aes, streams = wire["streams_aes_gcm"], wire["streams_opened"] + wire["streams_accepted"]
        return "aes-256-gcm" if aes == streams else "chacha20-poly1305" if not aes else "mixed"


def measure_p2p(sizes: dict[str, int], tmp: Path, out: dict[str, Any]) -> None:
    with contextlib.ExitStack() as stack:
        p2p = P2P(stack, tmp)
        clock, start = CpuClock(p2p.peer.pid), time.perf_counter()
        result = p2p.cluster.submit(bench_data_work.make, sizes["d3_bytes"]).result()
        out["d3_wall_s"] = time.perf_counter() - start
        out["d3_cpu_s"], out["d3_faults"] = clock.spent(), clock.faults()
        assert result.nbytes == sizes["d3_bytes"] // 8 * 8
        del result
        out["d3_peak_rss_mb"] = peak_rss_mb()
        out["d3_remote_peak_rss_mb"] = tree_peak_rss_mb(p2p.peer.pid)
        _log(f"D3 {out['d3_wall_s']:.2f} s")

        measure_d1(p2p, sizes, out)
        out["stream_cipher"] = p2p.stream_cipher()

        arr, tasks = d2_array(sizes), sizes["d2_tasks"]
        before = p2p.sharing()["fetched_bytes"]
        clock, start = CpuClock(p2p.peer.pid), time.perf_counter()
        handle = p2p.cluster.share(arr)
        got = list(p2p.cluster.map(bench_data_work.slice_total, [handle] * tasks,
                                   range(tasks), [tasks] * tasks))
        out["d2_wall_s"] = time.perf_counter() - start
        out["d2_cpu_s"], out["d2_faults"] = clock.spent(), clock.faults()
        assert got == [bench_data_work.slice_total(arr, i, tasks) for i in range(tasks)]
        out["d2_bytes_per_peer"] = p2p.sharing()["fetched_bytes"] - before
        out["d2_array_bytes"] = int(arr.nbytes)
        _log(f"D2 {out['d2_wall_s']:.2f} s, {out['d2_bytes_per_peer']:,} bytes")
        del arr, handle
        measure_daemon(p2p, sizes, out)


def measure_daemon(p2p: P2P, sizes: dict[str, int], out: dict[str, Any]) -> None:
    """D1's arrays and D3's result through the join peer's control socket, as a client of
    its daemon (``Cluster(daemon=True)``): its own two workers run the tasks."""
    import numpy as np

    import p2pcluster

    config = p2pcluster.Config.local(cluster=p2p.cluster.config.cluster,
                                     secret_file=p2p.cluster.config.secret_file)
    with p2pcluster.Cluster(config, include=[WORK_FILE], daemon=True,
                            control=p2p.control) as client:
        assert client.via_daemon
        list(client.map(bench_data_work.total, warm_arrays(sizes)))
        arrays = d1_arrays(sizes)
        expected = [float(np.sum(a)) for a in arrays]
        clock, start = CpuClock(p2p.peer.pid), time.perf_counter()
        assert list(client.map(bench_data_work.total, arrays)) == expected
        out["daemon_d1_gbps"] = gbps(arrays, time.perf_counter() - start)
        out["daemon_d1_cpu_s"] = clock.spent()
        del arrays
        clock, start = CpuClock(p2p.peer.pid), time.perf_counter()
        result = client.submit(bench_data_work.make, sizes["d3_bytes"]).result()
        out["daemon_d3_wall_s"] = time.perf_counter() - start
        out["daemon_d3_cpu_s"] = clock.spent()
        assert result.nbytes == sizes["d3_bytes"] // 8 * 8
    _log(f"through the daemon: D1 {out['daemon_d1_gbps']:.3f} GB/s, "
         f"D3 {out['daemon_d3_wall_s']:.2f} s")


def measure_d1(p2p: P2P, sizes: dict[str, int], out: dict[str, Any]) -> None:
    """D1 on p2pcluster: warm, then D1's rounds (the first is the figure)."""
    import numpy as np

    list(p2p.cluster.map(bench_data_work.total, warm_arrays(sizes)))
    arrays = d1_arrays(sizes)
    expected = [float(np.sum(a)) for a in arrays]
    rounds, limits = [], [out["d1_aead_limit_gbps"], aead_limit_gbps(sizes["aead_bytes"])]
    for _ in range(D1_ROUNDS):
        machine = MachineClock()
        clock, start = CpuClock(p2p.peer.pid), time.perf_counter()
        sums = list(p2p.cluster.map(bench_data_work.total, arrays))
        wall = time.perf_counter() - start
        assert sums == expected, "D1 results differ"
        rounds.append((wall, clock.spent(), clock.faults()))
        if len(rounds) == 1:
            out["d1_machine_cpu_s"] = machine.spent()
            out["d1_cpu_bound_gbps"] = cpu_bound_gbps(arrays, out["d1_machine_cpu_s"])
            limits.append(aead_limit_gbps(sizes["aead_bytes"]))
    out["d1_aead_limit_gbps"] = (limits[1] + limits[2]) / 2
    out["d1_aead_limit_measured_gbps"] = [round(x, 3) for x in limits]
    wall, out["d1_cpu_s"], out["d1_faults"] = rounds[0]
    out["d1_gbps"] = gbps(arrays, wall)
    out["d1_rounds_gbps"] = [round(gbps(arrays, r[0]), 3) for r in rounds]
    out["d1_owner_peak_rss_mb"] = peak_rss_mb()
    del arrays
    _log(f"D1 {out['d1_gbps']:.3f} GB/s")


def d1_arrays(sizes: dict[str, int], count: int | None = None, first: int = 0) -> list[Any]:
    import numpy as np

    n = sizes["d1_bytes"] // 8
    count = sizes["d1_count"] if count is None else count
    return [np.random.default_rng(i).standard_normal(n) for i in range(first, first + count)]


def gbps(arrays: list[Any], seconds: float) -> float:
    return sum(a.nbytes for a in arrays) / seconds / 1e9


def warm_arrays(sizes: dict[str, int]) -> list[Any]:
    """The arrays both systems sum once before D1 is timed (none of D1's own): the first
    arrays a system moves pay for what it sets up once (buffers, pools, its workers' first
    allocations), which D1 should not count for either."""
    return d1_arrays(sizes, WARM_ARRAYS, first=sizes["d1_count"])


def d2_array(sizes: dict[str, int]) -> Any:
    import numpy as np

    return np.random.default_rng(0).standard_normal(sizes["d2_bytes"] // 8)


def measure_dask(sizes: dict[str, int], out: dict[str, Any]) -> None:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,  # type: ignore[no-untyped-call]
                      dashboard_address=None) as cluster, \
            Client(cluster) as client:  # type: ignore[no-untyped-call]
        client.wait_for_workers(2, timeout=READY_TIMEOUT)
        client.gather(client.map(bench_data_work.total, warm_arrays(sizes), pure=False))
        arrays = d1_arrays(sizes)
        walls = []
        for _ in range(D1_ROUNDS):
            machine, start = MachineClock(), time.perf_counter()
            client.gather(client.map(bench_data_work.total, arrays, pure=False))
            walls.append(time.perf_counter() - start)
            if len(walls) == 1:
                out["d1_dask_machine_cpu_s"] = machine.spent()
                out["d1_dask_cpu_bound_gbps"] = cpu_bound_gbps(arrays,
                                                               out["d1_dask_machine_cpu_s"])
        out["d1_dask_gbps"] = gbps(arrays, walls[0])
        out["d1_dask_rounds_gbps"] = [round(gbps(arrays, w), 3) for w in walls]
        del arrays
        _log(f"D1 Dask {out['d1_dask_gbps']:.3f} GB/s")
        arr, tasks = d2_array(sizes), sizes["d2_tasks"]
        start = time.perf_counter()
        future = client.scatter(arr, broadcast=True)
        client.gather(client.map(bench_data_work.slice_total, [future] * tasks, range(tasks),
                                 [tasks] * tasks, pure=False))
        out["d2_dask_wall_s"] = time.perf_counter() - start
        _log(f"D2 Dask {out['d2_dask_wall_s']:.2f} s")


KEYS = ("d1_gbps", "d1_dask_gbps", "d1_aead_limit_gbps", "d1_aes_gcm_limit_gbps",
        "stream_cipher", "d1_owner_peak_rss_mb",
        "d2_bytes_per_peer", "d2_array_bytes", "d2_wall_s", "d2_dask_wall_s", "d3_wall_s",
        "d3_peak_rss_mb", "d3_remote_peak_rss_mb", "d1_cpu_s", "d2_cpu_s", "d3_cpu_s",
        "d1_faults", "d2_faults", "d3_faults", "d1_rounds_gbps", "d1_dask_rounds_gbps",
        "d1_aead_limit_measured_gbps", "d1_machine_cpu_s", "d1_cpu_bound_gbps",
        "d1_dask_machine_cpu_s", "d1_dask_cpu_bound_gbps", "daemon_d1_gbps",
        "daemon_d1_vs_dask", "daemon_d1_cpu_s", "daemon_d3_wall_s", "daemon_d3_cpu_s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="small sizes: a check, not figures")
    parser.add_argument("--no-dask", action="store_true", help="skip Dask")
    parser.add_argument("--size", action="append", default=[], metavar="KEY=N",
                        help="override one size, e.g. --size d1_count=16 (keys: "
                             + ", ".join(FULL) + "): for a quicker comparison, not figures")
    args = parser.parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    for item in args.size:
        key, _, value = item.partition("=")
        if key not in sizes or not value.isdigit():
            parser.error(f"--size {item}: expected KEY=N with KEY one of {', '.join(sizes)}")
        sizes[key] = int(value)
    bench_tasks.unwind_on_sigterm()
    out: dict[str, Any] = dict.fromkeys(KEYS)
    out["errors"] = {}
    out["sizes"] = sizes
    out["d1_aead_limit_gbps"] = aead_limit_gbps(sizes["aead_bytes"])
    out["d1_aes_gcm_limit_gbps"] = aead_limit_gbps(sizes["aead_bytes"], "aes-256-gcm")
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        try:
            measure_p2p(sizes, Path(tmp), out)
        except Exception as exc:
            out["errors"]["p2p"] = f"{type(exc).__name__}: {exc}"[:600]
    if not args.no_dask:
        try:
            measure_dask(sizes, out)
        except Exception as exc:
            out["errors"]["dask"] = f"{type(exc).__name__}: {exc}"[:600]
    if out["daemon_d1_gbps"] and out["d1_dask_gbps"]:
        out["daemon_d1_vs_dask"] = out["daemon_d1_gbps"] / out["d1_dask_gbps"]
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for key in KEYS:
            value = out[key]
            print(f"{key:24} {value:.3f}" if isinstance(value, float) else f"{key:24} {value}")
        for system, error in out["errors"].items():
            print(f"error ({system}): {error}")
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
