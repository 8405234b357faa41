"""`ray start` for a second node on the same machine, bound to 127.0.0.1.

Ray refuses to join a node when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (the switch
that keeps a head on loopback), and without it resolves 127.0.0.1 to the machine's
outward address (ray-project/ray#59110). For tests only: answer "127.0.0.1" as this
machine's node address, then run the ordinary `ray start` command line.
"""

import sys

import ray._private.services as services

services.get_node_ip_address = lambda address=None: "127.0.0.1"

from ray.scripts.scripts import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
