"""Network namespaces as separate hosts for the fleet test."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000

# Every namespace this module makes is named PREFIX-<pid>-<n>-..., so two test runs side by side never clash
# and a later run can tell (by the pid) which leftovers belong to a process that is gone.
PREFIX = "mochi"
NETNS_DIR = Path("/run/netns")
# Inside every host namespace the shared link is called this; the bridge's ports are p0, p1, ...
HOST_IFACE = "eth0"
_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def _exists(namespace: str) -> bool:
    return (NETNS_DIR / namespace).exists()


def _pids(namespace: str) -> list[int]:
    done = _ip("netns", "pids", namespace, check=False)
    return [int(word) for word in done.stdout.split() if word.isdigit()]


def _delete(namespace: str, kill: bool = True) -> None:
    """Kill what still runs in `namespace` (if asked), then delete it; quiet when it is already gone."""
    if not _exists(namespace):
        return
    if kill:
        pids = _pids(namespace)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _is_zombie(pid)]
            time.sleep(0.01)
    _ip("netns", "delete", namespace, check=False)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def reap_stale() -> list[str]:
    """Delete namespaces this module made in processes that no longer exist (a run killed before its cleanup)."""
    reaped: list[str] = []
    if not NETNS_DIR.is_dir():
        return reaped
    for path in NETNS_DIR.iterdir():
        parts = path.name.split("-")
        if len(parts) < 3 or parts[0] != PREFIX or not parts[1].isdigit():
            continue
        if Path(f"/proc/{parts[1]}").exists():
            continue
        _delete(path.name)
        reaped.append(path.name)
    return reaped


@cache
def namespaces_available() -> bool:
    """True when this process can make namespaces joined by a bridge (root, iproute2, veth and bridge support)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"{PREFIX}-{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
        _ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    except (OSError, subprocess.SubprocessError, RuntimeError):
        return False
    finally:
        _delete(probe, kill=False)
    return True


@dataclass(frozen=True)
class Host:
    """One namespace standing for one machine: its own `lo`, and `eth0` on the shared link at `address`."""

    name: str  # the namespace's name, as `ip netns list` shows it
    address: str  # eth0's IPv4 address, e.g. 10.77.0.2
    veth: str  # the bridge's port for this host: the veth end inside the bridge's namespace
    bridge_namespace: str  # the namespace holding the bridge (and `veth`)

    def command(self, argv: Sequence[str], *, keep_sys: bool = False) -> list[str]:
        """`argv` run inside this host; either way it execs, so a Popen's pid is the program's own.

        `ip netns exec` runs it in a mount namespace of its own with a fresh /sys (so /sys/class/net shows this
        host's links), which hides what was mounted under /sys, /sys/fs/cgroup among them; every other mount
        (/work, /tmp, /dev, /proc) is the machine's. `keep_sys` uses `nsenter --net` instead: the network
        namespace only, the mounts untouched.
        """
        if keep_sys:
            return ["nsenter", f"--net={NETNS_DIR / self.name}", "--", *argv]
        return ["ip", "netns", "exec", self.name, *argv]

    def call(self, function: Callable[[], T]) -> T:
        """`function()` run from inside this host: in a thread of ours moved into its network namespace
        (setns moves one thread only), so every socket it opens is on this host's link."""
        outcome: list[T] = []
        failure: list[BaseException] = []

        def run() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(NETNS_DIR / self.name, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {self.name}")
            finally:
                os.close(fd)
            try:
                outcome.append(function())
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=run, name=f"in-{self.name}")
        thread.start()
        thread.join()
        if failure:
            raise failure[0]
        return outcome[0]

    def cut(self) -> None:
        """Pull the cable: the bridge's port goes down, eth0 loses carrier, packets either way are dropped silently.

        eth0 itself stays up with its address and routes, so nothing in the host learns of the cut but by
        timeouts: no RST, no "network unreachable", as when a switch port or a cable fails. An established TCP
        connection stalls and, once restored, carries on (the kernel gives up only after tcp_retries2, ~15 min,
        of unanswered retransmissions): within ~0.5 s where the cut host had data waiting to send, at the peer's
        next backed-off retransmission (up to about as long as the cut lasted) where the peer had.
        """
        _ip("-n", self.bridge_namespace, "link", "set", self.veth, "down")

    def restore(self) -> None:
        """Plug the cable back in: the port forwards again at once (the bridge runs no STP)."""
        _ip("-n", self.bridge_namespace, "link", "set", self.veth, "up")

    def is_cut(self) -> bool:
        """True while the bridge's port for this host is down."""
        done = _ip("-n", self.bridge_namespace, "-j", "link", "show", self.veth)
        links: list[dict[str, object]] = json.loads(done.stdout)
        flags = links[0].get("flags", [])
        return not isinstance(flags, list) or "UP" not in flags


class Network:
    """A bridge in a namespace of its own and one namespace per host on it; the root namespace is not touched.

    `with Network(["queue", "worker", "store"]) as net: net.host("queue").address` -> "10.77.0.2", the next
    host .3, and so on (.1 is left free). Leaving the block kills whatever still runs in the namespaces and
    deletes them all, also after a setup that failed halfway; calling `close()` again does nothing.
    """

    def __init__(self, names: Sequence[str], subnet: str = "10.77.0.0/24") -> None:
        if len(set(names)) != len(names):
            raise ValueError(f"host names repeat: {list(names)}")
        for name in names:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", name):
                raise ValueError(f"host name {name!r}: use lower-case letters, digits and _")
        network = ipaddress.IPv4Network(subnet)
        addresses = list(itertools.islice(network.hosts(), 1, len(names) + 1))
        if len(addresses) < len(names):
            raise ValueError(f"{subnet} has no room for {len(names)} hosts")
        tag = f"{PREFIX}-{os.getpid()}-{next(_counter)}"
        self.bridge_namespace = f"{tag}-bridge"
        self.prefixlen = network.prefixlen
        self.hosts: dict[str, Host] = {
            name: Host(f"{tag}-{name}", str(address), f"p{index}", self.bridge_namespace)
            for index, (name, address) in enumerate(zip(names, addresses, strict=True))
        }
        self._made: list[str] = []

    def __enter__(self) -> Network:
        reap_stale()
        try:
            self._set_up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def host(self, name: str) -> Host:
        return self.hosts[name]

    def close(self) -> None:
        """Delete every namespace made (hosts first, then the bridge), killing what still runs in them."""
        while self._made:
            _delete(self._made.pop())

    def _add_namespace(self, name: str) -> None:
        self._made.append(name)  # before it exists: a failure halfway through `ip netns add` is cleaned up too
        _ip("netns", "add", name)
        # No IPv6 on the link (set before any link exists): no DAD or router solicitations to wait on or to see.
        _sysctl(name, {"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1"})
        _ip("-n", name, "link", "set", "lo", "up")

    def _set_up(self) -> None:
        bridge = self.bridge_namespace
        self._add_namespace(bridge)
        _ip("-n", bridge, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        # A new namespace starts with br_netfilter's calls on where the module is loaded (as here): bridged
        # frames would pass through this namespace's (empty) iptables. Off, so nothing but the bridge decides.
        _sysctl(bridge, {f"net/bridge/bridge-nf-call-{table}": "0" for table in ("iptables", "ip6tables", "arptables")})
        _ip("-n", bridge, "link", "set", "br0", "up")
        for host in self.hosts.values():
            self._add_namespace(host.name)
            # Made in the bridge's namespace with its peer put straight into the host's: no name ever appears in
            # the root namespace, so no clash with its interfaces or with another run's.
            _ip("-n", bridge, *f"link add {host.veth} type veth peer name {HOST_IFACE} netns {host.name}".split())
            _ip("-n", bridge, "link", "set", host.veth, "master", "br0", "up")
            _ip("-n", host.name, "addr", "add", f"{host.address}/{self.prefixlen}", "dev", HOST_IFACE)
            _ip("-n", host.name, "link", "set", HOST_IFACE, "up")


def _sysctl(namespace: str, settings: dict[str, str]) -> None:
    """Write /proc/sys/`key` = value inside `namespace`, for each key that exists there (IPv6 or br_netfilter may
    be absent); /proc/sys/net is per namespace, so this leaves the machine's own settings alone."""
    script = "".join(
        f"if [ -e /proc/sys/{key} ]; then echo {value} > /proc/sys/{key}; fi\n" for key, value in settings.items()
    )
    subprocess.run(["ip", "netns", "exec", namespace, "sh", "-ec", script], check=True, capture_output=True, timeout=30)
