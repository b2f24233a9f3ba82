"""Removing what a killed run left behind: its names carry its pid."""

from __future__ import annotations

import json
import re

from devtools.netns.namespace import PREFIX
from devtools.netns.system import alive, check_capable, command, kill_all, link_exists


def sweep_stale(prefix: str = PREFIX) -> list[str]:
    """Removes namespaces and veths named by `Namespace` for processes that are gone.

    A run killed with SIGKILL (or a crashed CI job) cannot clean up. Objects of live
    processes (other test sessions, other worktrees) are left alone. Returns what was
    removed; raises NetnsError when the machine cannot make namespaces at all.
    """
    check_capable()
    removed: list[str] = []
    ns_pattern = re.compile(rf"^{prefix}-(\d+)-[0-9a-z]+$")
    veth_pattern = re.compile(rf"^{prefix}(\d+)x[0-9a-z]+[hn]$")
    for line in command(["ip", "netns", "list"]).splitlines():
        name = line.split()[0] if line.strip() else ""
        match = ns_pattern.match(name)
        if match and not alive(int(match.group(1))):
            kill_all(name)
            command(["ip", "netns", "del", name])
            removed.append(name)
    for link in json.loads(command(["ip", "-j", "link", "show"]) or "[]"):
        name = link.get("ifname", "")
        match = veth_pattern.match(name)
        if match and not alive(int(match.group(1))) and link_exists(name):
            command(["ip", "link", "del", name])
            removed.append(name)
    return removed
