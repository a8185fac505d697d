"""Who this drone is: hostname, primary IP and its MAC, cores, arch, CHOST, load.

Everything here is read once at start (except the load average) and sent with register. The
portage target (SPEC section 12) is not identity: it changes with a repository sync, so the
agent reads it itself (``swarmlib.target.read_target``) and sends it beside these fields.
None of it sends network traffic: the primary IP is the source address the kernel would use to
reach the orchestrator (a connected UDP socket sends nothing).
"""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

import swarmlib

SYS_NET = Path("/sys/class/net")
_SIOCGIFADDR = 0x8915

# uname machine -> Gentoo ARCH keyword
_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "i386": "x86",
    "i486": "x86",
    "i586": "x86",
    "i686": "x86",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv6l": "arm",
    "armv7l": "arm",
    "ppc64": "ppc64",
    "ppc64le": "ppc64",
    "ppc": "ppc",
    "riscv64": "riscv",
    "s390x": "s390",
    "sparc64": "sparc",
    "loongarch64": "loong",
    "mips64": "mips",
    "mips": "mips",
}


@attrs.frozen(kw_only=True)
class Identity:
    name: str
    hostname: str
    ip: str
    mac: str
    cores: int
    arch: str
    chost: str
    version: str = swarmlib.__version__

    def register_body(
        self, slots: int, target: dict[str, Any] | None = None
    ) -> dict[str, object]:
        """The register call's body; ``target`` (SPEC section 12) only when the drone has one."""
        body: dict[str, object] = {
            "name": self.name,
            "hostname": self.hostname,
            "ip": self.ip,
            "mac": self.mac,
            "cores": self.cores,
            "arch": self.arch,
            "chost": self.chost,
            "version": self.version,
            "slots": slots,
        }
        if target is not None:
            body["target"] = target
        return body


def hostname() -> str:
    # gethostname(), not getfqdn(): the latter often says "localhost" from /etc/hosts.
    return socket.gethostname() or "localhost"


def primary_ip(orchestrator_url: str) -> str:
    """The local address the kernel routes from when talking to the orchestrator."""
    parts = urlsplit(orchestrator_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError:
        infos = []
    for family, _type, _proto, _canon, addr in infos:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect(addr)  # UDP: picks a route and a source address, sends nothing
                return str(s.getsockname()[0])
        except OSError:
            continue
    return "127.0.0.1"


def interface_of(ip: str) -> str | None:
    """The interface holding an IPv4 address (SIOCGIFADDR on each), or None."""
    try:
        names = sorted(p.name for p in SYS_NET.iterdir())
    except OSError:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in names:
            try:
                req = struct.pack("256s", name.encode()[:15])
                res = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, req)
            except OSError:
                continue
            if socket.inet_ntoa(res[20:24]) == ip:
                return name
    return None


def mac_of(interface: str | None) -> str:
    if interface is None:
        return ""
    try:
        return (SYS_NET / interface / "address").read_text().strip().lower()
    except OSError:
        return ""


def gentoo_arch(machine: str | None = None) -> str:
    m = machine or platform.machine()
    return _ARCH.get(m, m or "unknown")


def derived_chost(machine: str | None = None) -> str:
    m = machine or platform.machine() or "unknown"
    vendor = "pc" if m in ("x86_64", "i386", "i486", "i586", "i686") else "unknown"
    if m.startswith("armv7"):
        return f"{m}a-unknown-linux-gnueabihf"
    return f"{m}-{vendor}-linux-gnu"


def chost() -> str:
    """``portageq envvar CHOST`` when portage is installed, else derived from the platform."""
    exe = shutil.which("portageq")
    if exe:
        try:
            out = subprocess.run(
                [exe, "envvar", "CHOST"], capture_output=True, text=True, timeout=30, check=False
            )
            value = out.stdout.strip()
            if out.returncode == 0 and value:
                return value
        except (OSError, subprocess.SubprocessError):
            pass
    return derived_chost()


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return 0.0


def detect(*, name: str, cores: int, orchestrator: str) -> Identity:
    """Blocking (may run portageq): call it before the event loop or in a thread."""
    ip = primary_ip(orchestrator)
    return Identity(
        name=name,
        hostname=hostname(),
        ip=ip,
        mac=mac_of(interface_of(ip)),
        cores=cores,
        arch=gentoo_arch(),
        chost=chost(),
    )
