"""Watch _p2pcluster._tcp with python-zeroconf; print one JSON line per event.

    python tests/lan/browse.py ADDRESS SECONDS
"""

import json
import sys
import time

from zeroconf import IPVersion, ServiceBrowser, Zeroconf

zc = Zeroconf(interfaces=[sys.argv[1]], ip_version=IPVersion.V4Only)
start = time.monotonic()


def on_change(zeroconf, service_type, name, state_change):  # type: ignore[no-untyped-def]
    print(json.dumps({"t": round(time.monotonic() - start, 3), "event": state_change.name,
                      "name": name}), flush=True)


browser = ServiceBrowser(zc, "_p2pcluster._tcp.local.", handlers=[on_change])
time.sleep(float(sys.argv[2]))
browser.cancel()
zc.close()
