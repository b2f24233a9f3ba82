"""Real shaped networks for tests and benchmarks: a network namespace on a veth pair.

    with Namespace() as ns:             # or `async with`
        ns.shape_downlink(300)          # kbit/s into the namespace (tc tbf)
        ns.shape_uplink(250)            # kbit/s out of it
        ns.drop_udp(5)                  # 5 % of UDP each way (nftables numgen random)
        ns.block_udp()                  # or all of it
        ns.run("ip", "addr")            # a command inside (ip netns exec)

`namespace`: the namespace, its veth pair on a private /30 of 10.213.0.0/16 (unique on
the host, even across concurrent processes), shaping and filters, commands and sockets
inside, a launcher script for programs others start (Chromium under Playwright);
`shaping`: the tbf parameters and nft rules; `sweep`: removing what a killed run left;
`system`: the commands, and `NetnsError` saying why when the machine cannot (not root,
a tool missing, the kernel refusing). Loss and blocking are netdev-hook rules on the
namespace's end of the pair, in an nftables table of the namespace's own: the host's
ruleset is never touched, and the table goes with the namespace. Everything a `Namespace`
creates is removed on exit, whatever the body raised.
"""

from devtools.netns.namespace import POOL, PREFIX, Addresses, Namespace
from devtools.netns.shaping import DEFAULT_QUEUE_MS, NFT_TABLE, TokenBucket, token_bucket
from devtools.netns.sweep import sweep_stale
from devtools.netns.system import NetnsError, check_capable

__all__ = [
    "DEFAULT_QUEUE_MS",
    "NFT_TABLE",
    "POOL",
    "PREFIX",
    "Addresses",
    "Namespace",
    "NetnsError",
    "TokenBucket",
    "check_capable",
    "sweep_stale",
    "token_bucket",
]
