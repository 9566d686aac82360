"""What an outsider on the LAN does, without the cluster secret; run inside a namespace.

    python attacks.py flood HOST PORT N SOURCE...   N idle TCP connections, from the SOURCE
                                                   addresses in turn; prints "open K FAILED"
                                                   once all are tried, holds them until stdin
                                                   closes, then prints how many the peer closed
    python attacks.py capture PORT FILE            listen on PORT (TCP), record the first
                                                   hello a connecting peer sends into FILE
    python attacks.py replay HOST PORT FILE N MIB  N times: replay the recorded hello, then
                                                   announce a frame of MIB MiB and send it;
                                                   prints how many bytes the peer took each time
    python attacks.py spoof HOST PORT N            one junk UDP datagram from each of N
                                                   spoofed source addresses (raw socket)

Only the standard library: it is the attacker, not a peer.
"""

from __future__ import annotations

import os
import resource
import socket
import struct
import sys
import time

HELLO_SIZE = 122  # p2pcluster._proto.handshake.HELLO_SIZE (checked by the tests)


def flood(host: str, port: int, n: int, sources: list[str]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n + 64, n + 64))
    conns, failed = [], 0
    for i in range(n):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((sources[i % len(sources)], 0))
        sock.setblocking(False)
        err = sock.connect_ex((host, port))
        if err not in (0, 115):  # EINPROGRESS
            failed += 1
            sock.close()
            continue
        conns.append(sock)
    deadline = time.monotonic() + 10
    pending = set(conns)
    while pending and time.monotonic() < deadline:  # wait for the connects to complete
        for sock in list(pending):
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                failed += 1
                pending.discard(sock)
                conns.remove(sock)
                sock.close()
            elif _connected(sock):
                pending.discard(sock)
        time.sleep(0.01)
    print(f"open {len(conns)} {failed + len(pending)}", flush=True)
    sys.stdin.read()  # hold them until told to stop
    closed = sum(1 for sock in conns if _closed_by_peer(sock))
    print(f"closed {closed}", flush=True)


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _receive_up_to(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``sock``, or fewer if it closes first."""
    got = b""
    while len(got) < size:
        data = sock.recv(size - len(got))
        if not data:
            break
        got += data
    return got


def capture(port: int, path: str) -> None:
    listener = socket.create_server(("0.0.0.0", port))
    print("listening", flush=True)
    conn, _ = listener.accept()
    hello = _receive_up_to(conn, HELLO_SIZE)
    with open(path, "wb") as f:
        f.write(hello)
    print(f"captured {len(hello)}", flush=True)


def replay(host: str, port: int, path: str, times: int, mib: int) -> None:
    with open(path, "rb") as f:
        hello = f.read()
    for _ in range(times):
        sock = socket.create_connection((host, port), timeout=10)
        sock.sendall(hello)
        reply = _receive_up_to(sock, HELLO_SIZE)
        sent = _send_frame(sock, mib << 20)
        print(f"reply {len(reply)} sent {sent}", flush=True)
        sock.close()


def _send_frame(sock: socket.socket, size: int) -> int:
    """Announce a frame of ``size`` bytes and send them; the bytes sent before the peer
    closed (or all of them)."""
    sock.settimeout(5)
    sent = 0
    chunk = os.urandom(1 << 16)
    try:
        sock.sendall(struct.pack(">I", size))
        while sent < size:
            sent += sock.send(chunk[: size - sent])
    except OSError:
        pass
    return sent


def spoof(host: str, port: int, n: int) -> None:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    dst = socket.inet_aton(host)
    for i in range(n):
        src = socket.inet_aton(f"10.{100 + (i >> 16 & 63)}.{i >> 8 & 255}.{i & 255}")
        payload = os.urandom(60)
        udp = struct.pack(">HHHH", 40000 + i % 20000, port, 8 + len(payload), 0) + payload
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64,
                         socket.IPPROTO_UDP, 0, src, dst)
        raw.sendto(ip + udp, (host, 0))
        if i % 500 == 499:
            time.sleep(0.01)  # do not overflow the veth queue: every datagram should arrive
    print(f"sent {n}", flush=True)


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "flood":
        flood(args[0], int(args[1]), int(args[2]), args[3:])
    elif command == "capture":
        capture(int(args[0]), args[1])
    elif command == "replay":
        replay(args[0], int(args[1]), args[2], int(args[3]), int(args[4]))
    elif command == "spoof":
        spoof(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
