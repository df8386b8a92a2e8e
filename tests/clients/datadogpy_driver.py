"""Drives edgestat with the official Datadog Python client (datadog==0.56.0).

argv: UDP port, Unix socket path. Every call is deterministic (no sampling).
"""
import sys

from datadog.dogstatsd import DogStatsd

port = int(sys.argv[1])
sock = sys.argv[2]
quiet = dict(disable_telemetry=True, origin_detection_enabled=False)

udp = DogStatsd(host="127.0.0.1", port=port, **quiet)
for _ in range(3):
    udp.increment("py.page.views", tags=["env:test", "page:home"])
udp.increment("py.page.views", 2, tags=["page:home", "env:test"])
udp.decrement("py.queue", 4)
udp.gauge("py.temp", 20)
udp.gauge("py.temp", 22.5)
for v in (1, 2, 3, 10):
    udp.histogram("py.lat", v, tags=["env:test"])
udp.timing("py.timer", 250)
for member in ("alice", "bob", "alice"):
    udp.set("py.users", member)
udp.distribution("py.dist", 1)
udp.distribution("py.dist", 3)
udp.event("Deploy", "v1.2\nok", alert_type="success", priority="low", tags=["env:test"], source_type_name="ci")
udp.service_check("py.check", DogStatsd.WARNING, tags=["env:test"], message="slow")
udp.gauge("py.hosted", 5, tags=["host:web-7"])
udp.close_socket()

uds = DogStatsd(socket_path=sock, **quiet)
uds.gauge("py.uds.gauge", 7, tags=["via:uds"])
uds.increment("py.page.views", tags=["env:test", "page:home"])
uds.close_socket()
