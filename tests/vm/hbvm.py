#!/usr/bin/env python3
"""hbvm: infrastructure for hbfence's kernel-level tests in qemu (TCG).

Everything the VM test suite needs, Python 3 standard library only:

  * host tools installed with apt-get when missing         ensure_host_tools()
  * a Debian kernel + modules fetched into a cache dir     ensure_kernel()
  * a busybox initramfs (modules, init, command channel,   build_initramfs()
    optional agent binary, ipmitool with its libraries)
  * one shared raw disk image for the heartbeat volume     make_shared_disk()
  * VMs: qemu processes with i6300esb, QMP, serial log,    VM / Cluster
    command channel, user-mode networking
  * a QMP client recording events with timestamps          QMP
  * a command channel to run shell commands in the guest   GuestChannel
  * one OpenIPMI ipmi_sim BMC per VM whose chassis control BMC
    powers the VM off (QMP quit, then SIGKILL) and on
  * cleanup of everything started                          Cleanup

The same file is the BMC's chassis-control program:
    hbvm.py bmc-chassis VMDIR get power | set power 0|1 | set reset 1 ...
and has small CLI helpers (see `hbvm.py --help`).

Design notes are in README.md next to this file.
"""

from __future__ import annotations

import atexit
import base64
import glob
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("HBFENCE_VM_CACHE", "/var/tmp/hbfence-vm"))
QEMU = os.environ.get("HBFENCE_VM_QEMU", "qemu-system-x86_64")

# Host commands and the Debian packages that provide them.
HOST_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "ipmi_sim": "openipmi",
    "ipmitool": "ipmitool",
    "python3": "python3",
    "ganesha.nfsd": "nfs-ganesha",
}
# Files (not commands) the suite needs, and their packages: ganesha's VFS backend (its FSAL).
HOST_FILES = {"/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so": "nfs-ganesha-vfs"}

# Modules the guest loads, in this order (dependencies are resolved and loaded first).
GUEST_MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "qemu_fw_cfg", "i6300esb"]
# Shipped in the initramfs but loaded only on request (hbfence.softdog=1 or by a test).
GUEST_MODULES_OPTIONAL = ["softdog"]
# The NFSv4 client (sec=sys), loaded by the guest's rc when hbfence.nfs= asks for a mount. In the
# Debian kernel none of it is built in: sunrpc netfs fscache grace lockd nfs dns_resolver nfsv4.
GUEST_MODULES_NFS = ["nfsv4"]

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def run(cmd, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, **kw)


# ---------------------------------------------------------------------------
# Host tools
# ---------------------------------------------------------------------------

_apt_updated = False


def apt_install(pkgs) -> None:
    global _apt_updated
    if os.geteuid() != 0:
        raise RuntimeError(f"packages missing ({' '.join(pkgs)}) and not root to install them")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _apt_updated:
        run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        _apt_updated = True
    log(f"apt-get install {' '.join(pkgs)}")
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *pkgs], env=env,
        stdout=subprocess.DEVNULL)


def ensure_host_tools() -> None:
    missing = sorted({pkg for cmd, pkg in HOST_TOOLS.items() if shutil.which(cmd) is None}
                     | {pkg for f, pkg in HOST_FILES.items() if not os.path.exists(f)})
    # busybox must be the static one: it is copied into the initramfs.
    bb = shutil.which("busybox")
    if bb and "busybox-static" not in missing and not _is_static(bb):
        missing.append("busybox-static")
    if missing:
        apt_install(missing)


def _is_static(path: str) -> bool:
    with open(path, "rb") as f:
        data = f.read()
    return b"ld-linux" not in data[:65536] and data[:4] == b"\x7fELF"


# ---------------------------------------------------------------------------
# Kernel
# ---------------------------------------------------------------------------

@dataclass
class Kernel:
    package: str        # e.g. linux-image-6.1.0-56-amd64
    release: str        # uname -r of the guest, e.g. 6.1.0-56-amd64
    deb_version: str    # e.g. 6.1.192-2
    vmlinuz: Path
    moddir: Path        # .../lib/modules/<release>


def _kernel_package_name() -> str:
    """The versioned linux-image package behind linux-image-amd64 (or HBFENCE_VM_KERNEL_PKG)."""
    pkg = os.environ.get("HBFENCE_VM_KERNEL_PKG")
    if pkg:
        return pkg
    for attempt in range(2):
        out = run(["apt-cache", "depends", "linux-image-amd64"], check=False,
                  capture_output=True).stdout
        m = re.search(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)", out)
        if m:
            return m.group(1)
        if attempt == 0:
            apt_install([])  # apt-get update only
    raise RuntimeError("cannot resolve linux-image-amd64 with apt-cache (set HBFENCE_VM_KERNEL_PKG)")


def _kernel_from_dir(d: Path) -> Kernel:
    info = json.loads((d / "kernel.json").read_text())
    return Kernel(info["package"], info["release"], info["deb_version"],
                  d / "root" / "boot" / f"vmlinuz-{info['release']}",
                  d / "root" / "lib" / "modules" / info["release"])


def ensure_kernel(cache: Path = CACHE) -> Kernel:
    """Download (apt-get download) and extract the Debian kernel into cache/kernel/PKG. Idempotent."""
    kroot = cache / "kernel"
    try:
        pkg = _kernel_package_name()
    except Exception as e:  # offline or no apt lists: use whatever is cached
        cached = sorted(kroot.glob("*/kernel.json"))
        if not cached:
            raise
        log(f"kernel: {e}; using cached {cached[-1].parent.name}")
        return _kernel_from_dir(cached[-1].parent)
    d = kroot / pkg
    if (d / "kernel.json").exists():
        k = _kernel_from_dir(d)
        try:   # an older suite may have pruned modules this one needs: fetch again then
            for m in _kept_modules():
                resolve_modules(k.moddir, [m])
            return k
        except RuntimeError as e:
            log(f"kernel: cached {pkg} lacks a module ({e}); fetching it again")
    log(f"kernel: fetching {pkg}")
    tmp = kroot / f".{pkg}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run(["apt-get", "download", pkg], cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    debs = list(tmp.glob("*.deb"))
    if len(debs) != 1:
        raise RuntimeError(f"apt-get download {pkg} produced {debs}")
    deb_version = run(["dpkg-deb", "-f", str(debs[0]), "Version"], capture_output=True).stdout.strip()
    run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "root")])
    debs[0].unlink()
    # Keep only what the tests need: vmlinuz and the modules (about 10 % of the package).
    release = pkg[len("linux-image-"):]
    moddir = tmp / "root" / "lib" / "modules" / release
    vmlinuz = tmp / "root" / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.exists() or not moddir.is_dir():
        raise RuntimeError(f"{pkg}: no {vmlinuz.name} or lib/modules/{release}")
    keep = set()
    for m in _kept_modules():
        keep.update(resolve_modules(moddir, [m]))
    for ko in moddir.rglob("*.ko*"):
        if ko not in keep:
            ko.unlink()
    (tmp / "kernel.json").write_text(json.dumps(
        {"package": pkg, "release": release, "deb_version": deb_version}, indent=1))
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)
    for other in kroot.iterdir():   # an older kernel package superseded by this one
        if other != d and not other.name.startswith("."):
            shutil.rmtree(other, ignore_errors=True)
    log(f"kernel: {pkg} {deb_version} extracted to {d}")
    return _kernel_from_dir(d)


def _kept_modules() -> list:
    return GUEST_MODULES + GUEST_MODULES_OPTIONAL + GUEST_MODULES_NFS


def _module_index(moddir: Path) -> dict:
    idx = {}
    for ko in moddir.rglob("*.ko"):
        idx[ko.name[:-3].replace("-", "_")] = ko
    return idx


def _module_depends(ko: Path) -> list:
    """The depends= field of a module's .modinfo section (what modinfo -F depends prints)."""
    data = ko.read_bytes()
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", data)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def resolve_modules(moddir: Path, names) -> list:
    """Module files for names and their dependencies, dependencies first (insmod order)."""
    idx = _module_index(moddir)
    order: list = []
    seen = set()

    def visit(n, stack=()):
        n = n.replace("-", "_")
        if n in seen:
            return
        if n not in idx:
            raise RuntimeError(f"module {n} not found under {moddir} (built in? needed by {stack})")
        for d in _module_depends(idx[n]):
            visit(d, stack + (n,))
        seen.add(n)
        order.append(idx[n])

    for n in names:
        visit(n)
    return order


def builtin_modules(kernel: Kernel) -> set:
    f = kernel.moddir / "modules.builtin"
    if not f.exists():
        return set()
    return {Path(line.strip()).name.replace(".ko", "").replace("-", "_")
            for line in f.read_text().splitlines() if line.strip()}


# ---------------------------------------------------------------------------
# Initramfs
# ---------------------------------------------------------------------------

class Cpio:
    """Minimal cpio 'newc' writer (what the kernel's initramfs unpacker reads)."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1000
        self.names = set()

    def _add(self, name: str, mode: int, data: bytes = b"", rdev=(0, 0), nlink=1):
        name = name.lstrip("/")
        if name in self.names:
            return
        self.names.add(name)
        self.ino += 1
        nb = name.encode() + b"\x00"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0))
        self.buf.write(hdr.encode() + nb)
        self.buf.write(b"\x00" * ((4 - (110 + len(nb)) % 4) % 4))
        self.buf.write(data)
        self.buf.write(b"\x00" * ((4 - len(data) % 4) % 4))

    def dir(self, name: str, perm=0o755):
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self._add("/".join(parts[:i]), stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm=0o644):
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.dir(parent)
        self._add(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str):
        parent = os.path.dirname(name.strip("/"))
        if parent:
            self.dir(parent)
        self._add(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm=0o600):
        self._add(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        self._add("TRAILER!!!", 0, nlink=1)
        data = self.buf.getvalue()
        return data + b"\x00" * ((512 - len(data) % 512) % 512)


def _ldd_closure(binary: str) -> list:
    """Shared libraries (and the loader) a dynamic binary needs, as absolute host paths."""
    out = run(["ldd", binary], capture_output=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)", line)
        if m:
            libs.append(m.group(1))
    return libs


GUEST_INIT = r"""#!/bin/sh
# PID 1 of an hbvm guest: mount the API filesystems, then become busybox init (/etc/inittab).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs tmpfs /tmp
exec /bin/busybox init
"""

GUEST_INITTAB = """\
::sysinit:/etc/hbvm/rc
ttyS1::respawn:/etc/hbvm/cmdchan
::once:/etc/hbvm/payload
"""

GUEST_RC = r"""#!/bin/sh
# System setup of an hbvm guest (busybox init sysinit).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
up() { cut -d' ' -f1 /proc/uptime; }
mkdir -p /run/hbvm/cmd /var/log /var/lib /var/run /etc/hbfence
# hbfence.KEY=VALUE on the kernel command line -> HBVM_KEY=VALUE in /run/hbvm/env
for a in $(cat /proc/cmdline); do
  case "$a" in
    hbfence.*=*) k=${a%%=*}; k=${k#hbfence.}; v=${a#*=}
                 echo "HBVM_$(echo "$k" | tr 'a-z.-' 'A-Z__')='$v'" ;;
  esac
done > /run/hbvm/env
. /run/hbvm/env
hostname "${HBVM_NAME:-vm${HBVM_ID:-0}}"
echo "hbvm: rc start at $(up)s, id=${HBVM_ID:-?} name=$(hostname)"
echo 1 > /proc/sys/kernel/sysrq
echo 0 > /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null
while read -r m; do
  insmod "/lib/modules/hbvm/$m.ko" || echo "hbvm: insmod $m FAILED"
done < /lib/modules/hbvm/load.list
if [ "${HBVM_SOFTDOG:-0}" = 1 ] && [ ! -e /dev/watchdog ]; then
  insmod /lib/modules/hbvm/watchdog.ko 2>/dev/null
  insmod /lib/modules/hbvm/softdog.ko && echo "hbvm: softdog loaded"
fi
# files delivered with -fw_cfg name=opt/hbfence/fs/<path>,file=... -> /<path>
for k in /sys/firmware/qemu_fw_cfg/by_key/*; do
  n=$(cat "$k/name" 2>/dev/null)
  case "$n" in opt/hbfence/fs/*) ;; *) continue ;; esac
  p=/${n#opt/hbfence/fs/}
  mkdir -p "$(dirname "$p")"
  cat "$k/raw" > "$p"
  case "$p" in
    */bin/*|*/sbin/*|*.sh|/etc/hbvm/rc.local|/etc/hbfence/hooks.d/*) chmod 0755 "$p" ;;
    */bmc/*|*password*|*.key) chmod 0600 "$p" ;;
  esac
  echo "hbvm: fw_cfg -> $p"
done
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  # qemu user networking: the host is 10.0.2.2. No default route: nothing but 10.0.2.0/24 is reachable.
  ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up
fi
if [ -n "${HBVM_ETH1:-}" ] && [ -e /sys/class/net/eth1 ]; then
  # the segment the guests share among themselves (qemu socket netdev, multicast on the host's lo)
  ip addr add "$HBVM_ETH1" dev eth1 && ip link set eth1 up && echo "hbvm: eth1 $HBVM_ETH1"
fi
if [ -n "${HBVM_NFS:-}" ]; then
  # hbfence.nfs=PORT: the host's NFSv4 server (10.0.2.2:PORT, export /export) on /mnt/nfs, hard
  while read -r m; do
    insmod "/lib/modules/hbvm/$m.ko" || echo "hbvm: insmod $m FAILED"
  done < /lib/modules/hbvm/nfs.list
  mkdir -p /mnt/nfs
  if mount -t nfs4 -o "vers=4.1,proto=tcp,port=$HBVM_NFS,hard,timeo=50,retrans=2" 10.0.2.2:/export /mnt/nfs; then
    echo "hbvm: nfs 10.0.2.2:$HBVM_NFS:/export on /mnt/nfs at $(up)s"
  else
    echo "hbvm: nfs mount of 10.0.2.2:$HBVM_NFS:/export FAILED"
  fi
fi
for d in /sys/block/vd*; do
  [ -e "$d" ] && echo "hbvm: disk /dev/${d##*/} serial=$(cat $d/serial 2>/dev/null) size=$(cat $d/size)s"
done
[ -e /dev/watchdog ] && echo "hbvm: watchdog $(cat /sys/class/watchdog/watchdog0/identity 2>/dev/null)"
[ -x /etc/hbvm/rc.local ] && /etc/hbvm/rc.local
echo "hbvm: rc done at $(up)s"
"""

GUEST_PAYLOAD = r"""#!/bin/sh
# Starts the agent once per boot when it is present, configured and not disabled (hbfence.autostart=0).
. /run/hbvm/env
if [ "${HBVM_AUTOSTART:-1}" = 1 ] && [ -x /usr/sbin/hbfence ] && [ -f /etc/hbfence/hbfence.toml ]; then
  echo "hbvm: starting hbfence at $(cut -d' ' -f1 /proc/uptime)s"
  exec /usr/sbin/hbfence run --config /etc/hbfence/hbfence.toml --foreground
fi
"""

# Command channel on ttyS1. Host sends "ID BASE64(script)\n"; the guest runs each script in the
# background (so a hanging command blocks nothing else) and answers
#   @@HBVM BEGIN ID RC / base64 of stdout+stderr / @@HBVM END ID
# At every start it announces "@@HBVM READY ID BOOT_ID UPTIME".
# The reader is awk, not a shell `while read` loop: busybox ash restarts `read` from scratch when a
# SIGCHLD (a finished background command) interrupts it, losing the part of the line already read.
# awk has no SIGCHLD handler, and system("... &") leaves the command to init, not to awk.
GUEST_CMDCHAN = r"""#!/bin/sh
. /run/hbvm/env
stty raw -echo -iexten 2>/dev/null
echo "@@HBVM READY ${HBVM_ID:-0} $(cat /proc/sys/kernel/random/boot_id) $(cut -d' ' -f1 /proc/uptime)"
exec awk '$1 ~ /^[0-9]+$/ && NF == 2 && $2 ~ /^[A-Za-z0-9+\/=]+$/ { system("/etc/hbvm/cmdrun " $1 " " $2 " &") }'
"""

GUEST_CMDRUN = r"""#!/bin/sh
id=$1; d=/run/hbvm/cmd
echo "$2" | base64 -d > $d/$id.sh
sh $d/$id.sh > $d/$id.out 2>&1 < /dev/null
rc=$?
echo "$(cut -d' ' -f1 /proc/uptime) $id rc=$rc" >> /run/hbvm/cmd.log
{ echo "@@HBVM BEGIN $id $rc"; base64 $d/$id.out; echo "@@HBVM END $id"; } > $d/$id.msg
until mkdir $d/.lock 2>/dev/null; do usleep 10000; done
cat $d/$id.msg
rmdir $d/.lock
rm -f $d/$id.sh $d/$id.out $d/$id.msg
"""


def build_initramfs(kernel: Kernel, payload: str | None = None, with_ipmitool: bool = True,
                    extra: dict | None = None, cache: Path = CACHE) -> Path:
    """Build (or reuse) a gzip'ed newc initramfs. Cached by the hash of everything in it.

    payload: path of a static binary installed as /usr/sbin/hbfence (optional).
    extra: {guest_path: bytes or host path} added as files.
    """
    busybox = shutil.which("busybox")
    if busybox is None or not _is_static(busybox):
        raise RuntimeError("a static busybox (busybox-static) is needed")
    mods = resolve_modules(kernel.moddir, GUEST_MODULES)
    opt_mods = [m for m in resolve_modules(kernel.moddir, GUEST_MODULES_OPTIONAL) if m not in mods]
    nfs_mods = [m for m in resolve_modules(kernel.moddir, GUEST_MODULES_NFS) if m not in mods]
    libs = []
    ipmitool = shutil.which("ipmitool") if with_ipmitool else None
    if ipmitool:
        libs = _ldd_closure(ipmitool)
    files = {}  # guest path -> (bytes, perm)
    files["/init"] = (GUEST_INIT.encode(), 0o755)
    files["/etc/inittab"] = (GUEST_INITTAB.encode(), 0o644)
    files["/etc/hbvm/rc"] = (GUEST_RC.encode(), 0o755)
    files["/etc/hbvm/payload"] = (GUEST_PAYLOAD.encode(), 0o755)
    files["/etc/hbvm/cmdchan"] = (GUEST_CMDCHAN.encode(), 0o755)
    files["/etc/hbvm/cmdrun"] = (GUEST_CMDRUN.encode(), 0o755)
    files["/etc/passwd"] = (b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
    files["/etc/group"] = (b"root:x:0:\n", 0o644)
    files["/bin/busybox"] = (Path(busybox).read_bytes(), 0o755)
    for m in mods + opt_mods + nfs_mods:
        files[f"/lib/modules/hbvm/{m.name}"] = (m.read_bytes(), 0o644)
    files["/lib/modules/hbvm/load.list"] = ("".join(m.name[:-3] + "\n" for m in mods).encode(), 0o644)
    files["/lib/modules/hbvm/nfs.list"] = ("".join(m.name[:-3] + "\n" for m in nfs_mods).encode(), 0o644)
    if ipmitool:
        files["/usr/bin/ipmitool"] = (Path(ipmitool).read_bytes(), 0o755)
        for lib in libs:
            files[lib] = (Path(lib).read_bytes(), 0o755)
    if payload:
        files["/usr/sbin/hbfence"] = (Path(payload).read_bytes(), 0o755)
    for gp, src in (extra or {}).items():
        files[gp] = (src if isinstance(src, bytes) else Path(src).read_bytes(), 0o755)

    h = hashlib.sha256(kernel.release.encode())
    for gp in sorted(files):
        h.update(gp.encode() + b"\0" + hashlib.sha256(files[gp][0]).digest() + bytes([files[gp][1] & 0xff]))
    out = cache / "initramfs" / f"initramfs-{h.hexdigest()[:16]}.cpio.gz"
    if out.exists():
        out.touch()   # most recently used: kept by the pruning below
        return out
    c = Cpio()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "tmp",
              "var", "root", "lib/modules/hbvm", "mnt"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    for gp in sorted(files):
        data, perm = files[gp]
        c.file(gp, data, perm)
    applets = run([busybox, "--list-full"], capture_output=True).stdout.split()
    for a in applets:
        if a not in ("bin/busybox",) and "/" + a not in files:
            c.symlink(a, "/bin/busybox")
    c.symlink("sbin/init", "/bin/busybox")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(gzip.compress(c.finish(), compresslevel=6, mtime=0))
    tmp.rename(out)
    # keep the 8 most recently used images (each agent build makes a new one)
    for old in sorted(out.parent.glob("initramfs-*.cpio.gz"), key=lambda p: p.stat().st_mtime)[:-8]:
        old.unlink()
    log(f"initramfs: {out} ({out.stat().st_size // 1024} KiB, modules: "
        f"{' '.join(m.name[:-3] for m in mods)}{', ipmitool' if ipmitool else ''}"
        f"{', payload ' + payload if payload else ''})")
    return out


# ---------------------------------------------------------------------------
# Shared disk
# ---------------------------------------------------------------------------

BLOCK = 4096


def make_shared_disk(path: Path, size_mib: int = 16) -> Path:
    """A zeroed sparse raw image: the heartbeat volume all VMs share."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size_mib << 20)
    return path


# ---------------------------------------------------------------------------
# Cleanup
# ---------------------------------------------------------------------------

class Cleanup:
    """Kills everything this run started: qemu processes (found through their pid files, so also
    the ones a BMC restarted) and ipmi_sim processes. Runs at exit and on SIGINT/SIGTERM/SIGHUP."""

    def __init__(self):
        self.actions = []
        self.done = False
        self.lock = threading.Lock()
        atexit.register(self.run)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, self._on_signal)

    def _on_signal(self, signum, frame):
        log(f"signal {signal.Signals(signum).name}: cleaning up")
        self.run()
        os._exit(128 + signum)

    def add(self, fn):
        self.actions.append(fn)

    def run(self):
        with self.lock:
            if self.done:
                return
            self.done = True
            for fn in reversed(self.actions):
                try:
                    fn()
                except Exception as e:  # keep cleaning
                    print(f"cleanup: {e}", file=sys.stderr)


_cleanup: Cleanup | None = None


def cleanup() -> Cleanup:
    global _cleanup
    if _cleanup is None:
        _cleanup = Cleanup()
    return _cleanup


def proc_alive(pid: int, must_contain: str | None = None) -> bool:
    """pid exists, is not a zombie and (optionally) its command line contains must_contain."""
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
        if st[st.rindex(")") + 2] in "ZX":
            return False
        if must_contain is not None:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            return must_contain in cmdline
        return True
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return False


def kill_stale(root: Path) -> None:
    """Kill qemu/ipmi_sim left behind by an earlier run that died without cleanup."""
    for pidfile in (list(root.rglob("qemu.pid")) + list(root.rglob("ipmi_sim.pid"))
                    + list(root.rglob("ganesha.pid"))):
        try:
            pid = int(pidfile.read_text().split()[0])
        except (ValueError, IndexError, OSError):
            continue
        if proc_alive(pid, str(pidfile.parent)):
            log(f"killing stale process {pid} ({pidfile})")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


_reaper = None


def start_reaper(root: Path) -> None:
    """A helper process that kills everything under root (by pid files) once this process is gone,
    however it died (even SIGKILL): it waits for EOF on a pipe only we hold the write end of."""
    global _reaper
    _reaper = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "reaper", str(root)],
                               stdin=subprocess.PIPE, start_new_session=True, close_fds=True)


def reaper_main(root: str) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sys.stdin.buffer.read()          # returns at EOF: the test runner exited or died
    kill_stale(Path(root))
    return 0


# ---------------------------------------------------------------------------
# QMP
# ---------------------------------------------------------------------------

class QMPError(Exception):
    pass


class QMP:
    """QMP client over a unix socket. A reader thread stores every event as
    {"event", "data", "t" (host monotonic at receipt), "qemu_time" (qemu's wall clock)}."""

    def __init__(self, path: Path, name: str = "", on_event=None):
        self.path = str(path)
        self.name = name
        self.on_event = on_event
        self.events: list = []
        self.cond = threading.Condition()
        self.replies: dict = {}
        self.next_id = 0
        self.closed = False
        self.sock = None
        self.wlock = threading.Lock()

    def connect(self, timeout: float = 30.0) -> "QMP":
        deadline = time.monotonic() + timeout
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline:
                    raise QMPError(f"{self.name}: QMP socket {self.path} not ready in {timeout}s")
                time.sleep(0.05)
        self.sock = s
        self.file = s.makefile("rb")
        greeting = json.loads(self.file.readline())
        if "QMP" not in greeting:
            raise QMPError(f"{self.name}: bad QMP greeting {greeting}")
        self.closed = False
        threading.Thread(target=self._reader, daemon=True, name=f"qmp-{self.name}").start()
        self.execute("qmp_capabilities")
        return self

    def _reader(self):
        try:
            for line in self.file:
                msg = json.loads(line)
                if "event" in msg:
                    ts = msg.get("timestamp", {})
                    ev = {"event": msg["event"], "data": msg.get("data", {}), "t": time.monotonic(),
                          "qemu_time": ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6}
                    with self.cond:
                        self.events.append(ev)
                        self.cond.notify_all()
                    if self.on_event:
                        self.on_event(ev)
                elif "id" in msg:
                    with self.cond:
                        self.replies[msg["id"]] = msg
                        self.cond.notify_all()
        except (OSError, ValueError):
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def execute(self, cmd: str, args: dict | None = None, timeout: float = 30.0):
        with self.cond:
            self.next_id += 1
            mid = self.next_id
        msg = {"execute": cmd, "id": mid}
        if args:
            msg["arguments"] = args
        with self.wlock:
            try:
                self.sock.sendall(json.dumps(msg).encode() + b"\n")
            except OSError as e:
                raise QMPError(f"{self.name}: {cmd}: {e}")
        deadline = time.monotonic() + timeout
        with self.cond:
            while mid not in self.replies:
                if self.closed:
                    raise QMPError(f"{self.name}: connection closed during {cmd}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QMPError(f"{self.name}: {cmd} timed out")
                self.cond.wait(left)
            r = self.replies.pop(mid)
        if "error" in r:
            raise QMPError(f"{self.name}: {cmd}: {r['error'].get('desc', r['error'])}")
        return r.get("return")

    def hmp(self, command_line: str) -> str:
        return self.execute("human-monitor-command", {"command-line": command_line})

    def wait_event(self, names, timeout: float, since: float = 0.0, pred=None):
        """First event named in names (str or set) received at or after `since` (monotonic);
        None on timeout or when the connection closed (qemu exited) without it."""
        names = {names} if isinstance(names, str) else set(names)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if ev["event"] in names and ev["t"] >= since and (pred is None or pred(ev)):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self.cond.wait(left)

    def close(self):
        try:
            self.sock.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------
# Guest command channel
# ---------------------------------------------------------------------------

class GuestError(Exception):
    pass


class GuestChannel:
    """Client of the guest's command channel (ttyS1 <-> a unix socket chardev)."""

    def __init__(self, path: Path, name: str = "", on_ready=None, rawlog: Path | None = None):
        self.path = str(path)
        self.rawlog = rawlog
        self.name = name
        self.on_ready = on_ready
        self.cond = threading.Condition()
        self.results: dict = {}
        self.boots: list = []   # [(monotonic, boot_id, uptime)]
        self.next_id = int(time.time()) % 100000 * 1000
        self.closed = True
        self.sock = None
        # True when we connected before the guest ran (qemu started paused): its READY line cannot
        # be missed, so wait_ready never needs a probe (a probe sent while the guest's tty is still
        # in cooked mode gets mangled and echoed into the READY line).
        self.from_start = False

    def connect(self, timeout: float = 30.0) -> "GuestChannel":
        deadline = time.monotonic() + timeout
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline:
                    raise GuestError(f"{self.name}: channel socket {self.path} not ready")
                time.sleep(0.05)
        self.sock = s
        self.closed = False
        threading.Thread(target=self._reader, daemon=True, name=f"chan-{self.name}").start()
        return self

    def _reader(self):
        f = self.sock.makefile("rb")
        cur = None
        rawlog = open(self.rawlog, "ab", buffering=0) if self.rawlog else None
        try:
            for raw in f:
                if rawlog:
                    rawlog.write(b"%.3f " % time.monotonic() + raw)
                line = raw.decode(errors="replace").strip("\r\n")
                # Until the guest's `stty -echo` ran, the tty echoes what we sent (e.g. a probe) and
                # the echo can precede a marker on the same line: markers count wherever they start
                # (base64 has no '@', so command output never contains one).
                at = line.find("@@HBVM ")
                if at > 0:
                    line = line[at:]
                if line.startswith("@@HBVM READY"):
                    parts = line.split()
                    self._add_boot(parts[3] if len(parts) > 3 else "",
                                   float(parts[4]) if len(parts) > 4 else 0.0)
                elif line.startswith("@@HBVM BEGIN"):
                    _, _, cid, rc = line.split()[:4]
                    cur = (int(cid), int(rc), [])
                elif line.startswith("@@HBVM END"):
                    if cur:
                        out = base64.b64decode("".join(cur[2])).decode(errors="replace")
                        with self.cond:
                            self.results[cur[0]] = (cur[1], out)
                            self.cond.notify_all()
                    cur = None
                elif cur is not None:
                    cur[2].append(line.strip())
        except OSError:
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _add_boot(self, boot_id: str, uptime: float):
        with self.cond:
            if self.boots and boot_id and self.boots[-1][1] == boot_id:
                return   # the same boot, seen by READY and by a probe
            self.boots.append((time.monotonic(), boot_id, uptime))
            self.cond.notify_all()
        if self.on_ready:
            self.on_ready(self.boots[-1])

    def wait_ready(self, timeout: float, after_boot: int = 0):
        """Wait until the guest's command channel has come up after_boot+1 times (boots counted by
        boot id). The channel announces itself (READY); when that may have been missed (we connected
        to a guest already running, e.g. after a BMC power on), a probe command after 20 s of
        silence finds the boot too. Never probes a channel connected before the guest started."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        probe = None
        while True:
            with self.cond:
                if len(self.boots) > after_boot:
                    return self.boots[after_boot]
                if probe is not None and probe in self.results:
                    rc, out = self.results.pop(probe)
                    probe = None
                    parts = out.split()
                    if rc == 0 and len(parts) >= 2:
                        self.cond.release()
                        try:
                            self._add_boot(parts[0], float(parts[1]))
                        finally:
                            self.cond.acquire()
                        continue
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise GuestError(f"{self.name}: guest not ready in {timeout:.0f}s"
                                     + (" (qemu gone)" if self.closed else ""))
                self.cond.wait(min(left, 1.0))
            if probe is None and not self.from_start and time.monotonic() - t0 > 20.0:
                probe = self.start("cat /proc/sys/kernel/random/boot_id; cut -d' ' -f1 /proc/uptime")

    def start(self, script: str) -> int:
        """Send a shell script; returns an id for wait()."""
        with self.cond:
            self.next_id += 1
            cid = self.next_id
        # the leading newline ends any partial line left in the guest's tty (sent before the
        # channel was up); empty lines are ignored by the guest
        line = f"\n{cid} {base64.b64encode(script.encode()).decode()}\n"
        if self.rawlog:
            with open(self.rawlog, "ab") as rl:
                rl.write(f"{time.monotonic():.3f} >> {cid} {script!r}\n".encode())
        try:
            self.sock.sendall(line.encode())
        except OSError as e:
            raise GuestError(f"{self.name}: send: {e}")
        return cid

    def wait(self, cid: int, timeout: float):
        """(rc, output) of command cid; None on timeout."""
        deadline = time.monotonic() + timeout
        boots = len(self.boots)
        with self.cond:
            while cid not in self.results:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if self.closed:
                    raise GuestError(f"{self.name}: channel closed (qemu gone)")
                if len(self.boots) > boots:
                    raise GuestError(f"{self.name}: guest rebooted while running a command")
                self.cond.wait(left)
            return self.results.pop(cid)

    def sh(self, script: str, timeout: float = 30.0, check: bool = True):
        """Run a shell script in the guest; returns (rc, output). check: raise if rc != 0."""
        r = self.wait(self.start(script), timeout)
        if r is None:
            raise GuestError(f"{self.name}: command timed out after {timeout}s: {script!r}")
        if check and r[0] != 0:
            raise GuestError(f"{self.name}: command failed rc={r[0]}: {script!r}\n{r[1]}")
        return r

    def close(self):
        try:
            self.sock.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------
# VMs
# ---------------------------------------------------------------------------

@dataclass
class VMConfig:
    vm_id: int
    name: str
    kernel: Path
    initrd: Path
    shared_disk: Path | None            # None: no block device (the volume is a file on NFS)
    vmdir: Path
    watchdog_action: str = "reset"      # reset | poweroff | shutdown | pause | none
    memory: str = "256M"
    net: bool = True
    cmdline_extra: str = ""
    files: dict = field(default_factory=dict)   # guest path -> host path (delivered by fw_cfg)
    # "GROUP:PORT": a second NIC (eth1) on a segment the VMs share, carried by a qemu socket
    # netdev as multicast over the host's loopback; nothing leaves the host.
    peer_segment: str | None = None


def qemu_argv(c: VMConfig) -> list:
    """The qemu command line of a VM. The shared disk:
      * cache=none: O_DIRECT on the host, so no host page cache sits between the VMs;
      * share-rw=on on the device: qemu's image locking lets several processes open the image
        read-write only if every one of them declares share-rw (alternative: file.locking=off);
      * device id hbdisk0: the handle for block_set_io_throttle (disk stall) and qemu-io.
    """
    d = c.vmdir
    cmdline = (f"console=ttyS0 panic=1 loglevel=6 rdinit=/init hbfence.id={c.vm_id} "
               f"hbfence.name={c.name} {c.cmdline_extra}").strip()
    argv = [
        QEMU, "-name", f"{c.name},debug-threads=on", "-accel", "tcg", "-machine", "pc",
        "-cpu", "qemu64", "-smp", "1", "-m", c.memory, "-nographic", "-no-user-config", "-nodefaults",
        "-kernel", str(c.kernel), "-initrd", str(c.initrd), "-append", cmdline,
        "-chardev", f"file,id=con0,path={d}/serial.log,append=on",
        "-serial", "chardev:con0",
        "-chardev", f"socket,id=cmd0,path={d}/cmd.sock,server=on,wait=off",
        "-serial", "chardev:cmd0",
        "-qmp", f"unix:{d}/qmp.sock,server=on,wait=off",
        "-qmp", f"unix:{d}/bmc-qmp.sock,server=on,wait=off",
        "-monitor", "none", "-parallel", "none",
        "-pidfile", f"{d}/qemu.pid",
        "-device", "i6300esb,id=wdt0", "-watchdog-action", c.watchdog_action,
    ]
    if c.shared_disk:
        argv += ["-drive", f"file={c.shared_disk},format=raw,if=none,id=hb0,cache=none,aio=threads",
                 "-device", "virtio-blk-pci,drive=hb0,id=hbdisk0,share-rw=on,serial=hbvol0"]
    if c.net:
        argv += ["-netdev", "user,id=net0,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,ipv6=off",
                 "-device", "virtio-net-pci,netdev=net0,id=nic0,romfile="]
    if c.peer_segment:
        argv += ["-netdev", f"socket,id=net1,mcast={c.peer_segment},localaddr=127.0.0.1",
                 "-device", f"virtio-net-pci,netdev=net1,id=nic1,mac=52:54:00:00:77:{c.vm_id:02x},romfile="]
    for gp, hp in sorted(c.files.items()):
        name = "opt/hbfence/fs/" + gp.lstrip("/")
        if len(name) > 55:
            raise ValueError(f"fw_cfg name too long (max 55): {name}")
        argv += ["-fw_cfg", f"name={name},file={hp}"]
    return argv


def launch_qemu(vmdir: Path, paused: bool = False) -> int:
    """Start the qemu of vmdir (argv from vmdir/qemu.json) detached from the caller, as a BMC power
    on does. Returns its pid. The process is not our child: liveness is read from /proc.
    paused: -S, the guest starts only at QMP cont (VM.attach does it once it listens)."""
    argv = json.loads((vmdir / "qemu.json").read_text()) + (["-S"] if paused else [])
    for s in ("qmp.sock", "bmc-qmp.sock", "cmd.sock", "qemu.pid"):
        try:
            (vmdir / s).unlink()
        except FileNotFoundError:
            pass
    logpath = vmdir / "qemu.log"
    with open(logpath, "ab") as logf:
        logf.write(f"--- launch at {time.strftime('%H:%M:%S')}\n".encode())
    # sh starts qemu in the background and exits: qemu is re-parented to init. qemu's stdio goes to
    # qemu.log, so a caller reading our stdout (ipmi_sim's popen) does not wait for qemu.
    p = subprocess.run(["/bin/sh", "-c", 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!',
                        "sh", str(logpath), *argv],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True, text=True)
    out = p.stdout
    return int(out.split()[0])


def qemu_pid(vmdir: Path) -> int | None:
    try:
        pid = int((vmdir / "qemu.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return pid if proc_alive(pid, str(vmdir)) else None


DISK_QOM = "/machine/peripheral/hbdisk0/virtio-backend"   # the virtio-blk device of the shared disk


class VM:
    """One guest. Owns its qemu process (relaunchable by its BMC), QMP and command channel."""

    def __init__(self, cfg: VMConfig, timeline: "Timeline" = None):
        self.cfg = cfg
        self.name = cfg.name
        self.dir = cfg.vmdir
        self.timeline = timeline
        self.qmp: QMP | None = None
        self.chan: GuestChannel | None = None
        self.pid: int | None = None
        self.launches = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "qemu.json").write_text(json.dumps(qemu_argv(cfg)))
        self.bmc: BMC | None = None
        self._exit_watch = None
        self._console_stops: list = []

    # -- process ----------------------------------------------------------
    def start(self):
        """Launch qemu paused, connect QMP and the command channel, then let the guest run: no
        event or READY line can be missed."""
        self.pid = launch_qemu(self.dir, paused=True)
        self.launches += 1
        self.attach()

    def attach(self, timeout: float = 30.0):
        """Connect QMP and the command channel to the running qemu (after start or a BMC power on)."""
        for c in (self.qmp, self.chan):
            if c:
                c.close()
        deadline = time.monotonic() + timeout
        while True:
            pid = qemu_pid(self.dir)
            if pid:
                self.pid = pid
                break
            if time.monotonic() > deadline:
                raise QMPError(f"{self.name}: qemu did not start:\n{self.qemu_log_tail()}")
            time.sleep(0.05)
        if self.timeline:
            self.timeline.add(self.name, "qemu-started", f"pid {self.pid}")
        self.qmp = QMP(self.dir / "qmp.sock", self.name, on_event=self._on_qmp_event)
        self.qmp.connect(max(1.0, deadline - time.monotonic()))
        self.chan = GuestChannel(self.dir / "cmd.sock", self.name, on_ready=self._on_ready,
                                 rawlog=self.dir / "channel.log")
        self.chan.connect(max(1.0, deadline - time.monotonic()))
        if self.qmp.execute("query-status")["status"] == "prelaunch":
            self.chan.from_start = True
            self.qmp.execute("cont")
        self._start_exit_watch(self.pid)

    def _start_exit_watch(self, pid):
        def watch():
            while proc_alive(pid):
                time.sleep(0.05)
            if self.timeline:
                self.timeline.add(self.name, "qemu-exited", f"pid {pid}")
        t = threading.Thread(target=watch, daemon=True, name=f"exit-{self.name}")
        t.start()
        self._exit_watch = t

    def _on_qmp_event(self, ev):
        if self.timeline:
            self.timeline.add(self.name, ev["event"], _fmt_event_data(ev["data"]), t=ev["t"])

    def _on_ready(self, boot):
        if self.timeline:
            self.timeline.add(self.name, "guest-ready", f"boot {boot[1][:8]} uptime {boot[2]}s", t=boot[0])

    def alive(self) -> bool:
        return qemu_pid(self.dir) is not None

    def kill(self, sig=signal.SIGKILL):
        """Kill the qemu process (a power cut without the BMC)."""
        pid = qemu_pid(self.dir)
        if pid:
            os.kill(pid, sig)

    def stop(self, timeout: float = 5.0):
        pid = qemu_pid(self.dir)
        if not pid:
            return
        try:
            if self.qmp and not self.qmp.closed:
                self.qmp.execute("quit", timeout=2)
        except QMPError:
            pass
        deadline = time.monotonic() + timeout
        while proc_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc_alive(pid):
            os.kill(pid, signal.SIGKILL)

    def wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.05)
        return not self.alive()

    def qemu_log_tail(self, n=20) -> str:
        try:
            return "\n".join((self.dir / "qemu.log").read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def console_offset(self) -> int:
        """Current size of serial.log: pass it as `since` to wait_console to see only newer lines."""
        try:
            return (self.dir / "serial.log").stat().st_size
        except FileNotFoundError:
            return 0

    def wait_console(self, pattern: str, timeout: float, since: int | None = None):
        """Wait until a line of the guest console (serial.log) after offset `since` (default: now)
        matches the regex; returns the match, None on timeout."""
        rx = re.compile(pattern)
        pos = self.console_offset() if since is None else since
        deadline = time.monotonic() + timeout
        buf = b""
        while True:
            try:
                with open(self.dir / "serial.log", "rb") as f:
                    f.seek(pos)
                    data = f.read()
            except FileNotFoundError:
                data = b""
            pos += len(data)
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                m = rx.search(line.decode(errors="replace"))
                if m:
                    return m
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def watch_console(self, pattern: str, label: str = "console"):
        """Put every new console line matching the regex into the timeline (host time of reading,
        polled every 0.1 s): the agent's log lines and kernel messages next to the QMP events."""
        rx = re.compile(pattern)
        start = self.console_offset()
        stop = threading.Event()

        def run():
            pos, buf = start, b""
            while True:
                stopped = stop.wait(0.1)
                try:
                    with open(self.dir / "serial.log", "rb") as f:
                        f.seek(pos)
                        data = f.read()
                except FileNotFoundError:
                    data = b""
                pos += len(data)
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace").strip("\r")
                    if "] Linux version " in text:   # firmware escape codes precede it
                        text = "kernel boot: " + text[text.index("Linux version "):][:40]
                    if rx.search(text) and self.timeline:
                        self.timeline.add(self.name, label, text[:150])
                if stopped:
                    return

        threading.Thread(target=run, daemon=True, name=f"console-{self.name}").start()
        self._console_stops.append(stop)

    def stop_watching(self):
        for s in self._console_stops:
            s.set()
        self._console_stops = []

    def serial_tail(self, n=30) -> str:
        try:
            return "\n".join((self.dir / "serial.log").read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    # -- guest ------------------------------------------------------------
    def sh(self, script: str, timeout: float = 30.0, check: bool = True):
        return self.chan.sh(script, timeout, check)

    def wait_ready(self, timeout: float = 120.0, after_boot: int = 0):
        return self.chan.wait_ready(timeout, after_boot)

    @property
    def boots(self) -> int:
        return len(self.chan.boots) if self.chan else 0

    # -- disk -------------------------------------------------------------
    def stall_disk(self):
        """Make the guest's I/O to the shared disk hang (the VM keeps running).

        block_set_io_throttle with bps=1: the throttle lets a request through while the bucket is
        (nearly) empty, then makes the next one wait (size / 1 B/s). A 1 MiB read issued by qemu-io
        through the same BlockBackend fills the bucket first, so every guest request afterwards waits
        about 12 days. resume_disk() lifts the limit, which restarts the queued requests."""
        self.qmp.execute("block_set_io_throttle", {
            "id": DISK_QOM, "bps": 1, "bps_rd": 0, "bps_wr": 0, "iops": 1, "iops_rd": 0, "iops_wr": 0})
        out = self.qmp.hmp('qemu-io hb0 "aio_read 0 1M"')
        if out.strip():
            raise QMPError(f"{self.name}: qemu-io: {out.strip()}")
        if self.timeline:
            self.timeline.add(self.name, "disk-stalled", "bps=1 throttle")

    def resume_disk(self):
        self.qmp.execute("block_set_io_throttle", {
            "id": DISK_QOM, "bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0})
        if self.timeline:
            self.timeline.add(self.name, "disk-resumed", "")


def _fmt_event_data(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())


# ---------------------------------------------------------------------------
# BMC (OpenIPMI ipmi_sim)
# ---------------------------------------------------------------------------

BMC_USER = "admin"
BMC_PASSWORD = "hbvm-secret"


class UdpProbe:
    """A one-file TFTP server on 127.0.0.1 (the guest fetches it from 10.0.2.2 with busybox tftp):
    proves UDP both ways between a guest and the host."""

    def __init__(self, payload: bytes = b"hbvm-udp-ok\n"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.payload = payload
        self.hits = []
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                pkt, addr = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            self.hits.append((addr, pkt[:2]))
            if pkt[:2] == b"\x00\x01":  # RRQ -> DATA block 1 (< 512 bytes: last block)
                self.sock.sendto(b"\x00\x03\x00\x01" + self.payload, addr)

    def close(self):
        self.stop = True
        self.thread.join(1)
        self.sock.close()


def free_tcp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class BMC:
    """An ipmi_sim on 127.0.0.1:port (IPMI 2.0 lanplus, cipher suite 3) for one VM.
    Chassis control runs `hbvm.py bmc-chassis VMDIR ...`: power off = QMP quit of that VM's qemu
    (SIGKILL if it is not gone within 2 s), power on = relaunch it, power state = qemu alive.
    The guests reach it as 10.0.2.2:port (slirp forwards to the host's 127.0.0.1)."""

    def __init__(self, vm: VM, port: int | None = None):
        self.vm = vm
        self.port = port or free_udp_port()
        self.dir = vm.dir / "bmc"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "state").mkdir(exist_ok=True)
        self.proc = None
        chassis = f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))} bmc-chassis {shlex.quote(str(vm.dir))}"
        (self.dir / "lan.conf").write_text(f"""\
name "{vm.name}"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {self.port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789ab{vm.cfg.vm_id:04x}
  endlan
  chassis_control "{chassis}"
  user 2 true "{BMC_USER}" "{BMC_PASSWORD}" admin 10 none md2 md5 straight
""")
        (self.dir / "sim.emu").write_text("mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n")
        vm.bmc = self

    def start(self):
        logf = open(self.dir / "ipmi_sim.log", "ab")
        self.proc = subprocess.Popen(
            ["ipmi_sim", "-n", "-c", str(self.dir / "lan.conf"), "-f", str(self.dir / "sim.emu"),
             "-s", str(self.dir / "state")],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, cwd=self.dir)
        logf.close()
        (self.dir / "ipmi_sim.pid").write_text(f"{self.proc.pid}\n")
        # ready when it answers
        deadline = time.monotonic() + 15
        while True:
            r = self.ipmitool("mc", "info", check=False, timeout=5)
            if r.returncode == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ipmi_sim for {self.vm.name} not answering on port {self.port}:\n"
                                   f"{r.stdout}{(self.dir / 'ipmi_sim.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)

    def ipmitool(self, *args, check=True, timeout=30) -> subprocess.CompletedProcess:
        """ipmitool against this BMC from the host (password via environment, not argv)."""
        cmd = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(self.port),
               "-U", BMC_USER, "-E", "-N", "1", "-R", "2", *args]
        return run(cmd, check=check, capture_output=True, timeout=timeout,
                   env=dict(os.environ, IPMI_PASSWORD=BMC_PASSWORD))

    def requests(self) -> list:
        """Chassis-control requests this BMC received: [(host monotonic time, text)], from
        chassis.log (wall clock there, converted with the current offset)."""
        try:
            text = (self.dir / "chassis.log").read_text(errors="replace")
        except FileNotFoundError:
            return []
        off = time.time() - time.monotonic()
        out = []
        for n, line in enumerate(text.splitlines()):
            ts, _, msg = line.partition(" ")
            try:
                out.append((float(ts) - off + n * 1e-6, msg))   # + n: keep the order in a timeline
            except ValueError:
                pass
        return out

    def power_status(self) -> str:
        out = self.ipmitool("chassis", "power", "status").stdout.strip()
        return "on" if out.endswith("on") else "off" if out.endswith("off") else out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def bmc_chassis_main(argv: list) -> int:
    """ipmi_sim chassis_control program: VMDIR get PARM... | VMDIR set PARM VAL [PARM VAL...]"""
    vmdir = Path(argv[0])
    op = argv[1] if len(argv) > 1 else ""
    rest = argv[2:]
    blog = vmdir / "bmc" / "chassis.log"

    def note(msg):
        with open(blog, "a") as f:
            f.write(f"{time.time():.3f} {msg}\n")

    if op == "get":
        out = []
        for p in rest:
            if p == "power":
                out.append(f"power:{1 if qemu_pid(vmdir) else 0}")
            elif p == "boot":
                out.append("boot:default")
            else:
                print(f"Invalid parameter: {p}")
                return 1
        print("\n".join(out))
        return 0
    if op == "set":
        pairs = list(zip(rest[0::2], rest[1::2]))
        for parm, val in pairs:
            val = val.strip('"')
            note(f"set {parm} {val}")
            if parm == "power":
                if val == "0":
                    _bmc_power_off(vmdir, note)
                else:
                    if not qemu_pid(vmdir):
                        pid = launch_qemu(vmdir)
                        note(f"power on: launched qemu pid {pid}")
            elif parm == "reset":
                if val == "1" and qemu_pid(vmdir):
                    _bmc_qmp(vmdir, "system_reset")
            elif parm in ("boot", "identify", "shutdown"):
                pass
            else:
                print(f"Invalid parameter: {parm}")
                return 1
        return 0
    if op == "check":
        return 1
    print(f"Unknown operation: {op}")
    return 1


def _bmc_qmp(vmdir: Path, cmd: str, timeout: float = 2.0):
    q = QMP(vmdir / "bmc-qmp.sock", "bmc")
    q.connect(timeout)
    try:
        return q.execute(cmd, timeout=timeout)
    finally:
        q.close()


def _bmc_power_off(vmdir: Path, note):
    pid = qemu_pid(vmdir)
    if not pid:
        note("power off: already off")
        return
    try:
        _bmc_qmp(vmdir, "quit")
    except (QMPError, OSError) as e:
        note(f"power off: QMP quit failed ({e}), SIGKILL")
    deadline = time.monotonic() + 2.0
    while proc_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc_alive(pid):
        os.kill(pid, signal.SIGKILL)
        while proc_alive(pid):
            time.sleep(0.02)
    note(f"power off: qemu pid {pid} gone")


# ---------------------------------------------------------------------------
# Timeline
# ---------------------------------------------------------------------------

class Timeline:
    """Events of a scenario, host monotonic clock; printed relative to a mark (the fault)."""

    def __init__(self):
        self.entries = []   # (t, who, what, detail)
        self.lock = threading.Lock()
        self.marks = {}

    def add(self, who, what, detail="", t=None):
        with self.lock:
            self.entries.append((time.monotonic() if t is None else t, who, what, detail))

    def mark(self, name, who="test", detail="") -> float:
        t = time.monotonic()
        self.marks[name] = t
        self.add(who, name, detail, t)
        return t

    def print(self, origin: float | None = None, since: float | None = None, out=sys.stdout):
        with self.lock:
            ents = sorted(self.entries)
        if origin is None:
            origin = ents[0][0] if ents else time.monotonic()
        for t, who, what, detail in ents:
            if since is not None and t < since:
                continue
            print(f"    {t - origin:+8.2f}s  {who:<6} {what:<16} {detail}", file=out)


# ---------------------------------------------------------------------------
# Cluster: shared disk + N VMs + N BMCs
# ---------------------------------------------------------------------------

def run_root() -> Path:
    return CACHE / "runs"


PEER_PORT = 7405                   # the agents' [network] listen port on the peer segment
PEER_KEY_PATH = "/etc/hbfence/cluster.key"   # delivered by fw_cfg, mode 0600 (rc: *.key)
PEER_SEGMENT_GROUP = "230.0.0.1"   # the port is a free one per cluster: runs do not share a segment


def peer_address(i: int) -> str:
    """VM i's address on the peer segment (eth1)."""
    return f"10.0.3.{10 + i}"


# ---------------------------------------------------------------------------
# A stallable TCP relay (one guest's path to the NFS server)
# ---------------------------------------------------------------------------

class StallRelay:
    """Listens on 127.0.0.1:<free port> and relays every connection to `upstream`. stall() stops
    relaying in both directions without closing anything: what is sent meanwhile waits in the
    socket buffers (the kernel acknowledges it, so the sender neither retransmits nor backs off),
    as with a storage path that hangs; resume() delivers it at once. A route change in the guest
    is no blip: the guest's TCP and its RPC transport back off (3 s, 6 s, ... reconnect delays),
    so NFS came back up to several seconds after the route did."""

    def __init__(self, upstream, name: str, timeline: Timeline | None = None):
        self.upstream, self.name, self.timeline = upstream, name, timeline
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.socks: list = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name=f"relay-{name}").start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
                u = socket.create_connection(self.upstream, timeout=10)
                u.settimeout(None)
            except OSError:
                if self.closed:
                    return
                continue
            self.socks += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                self.flowing.wait()
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait()   # read before the stall began: held until resume
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stall(self):
        self.flowing.clear()
        if self.timeline:
            self.timeline.add(self.name, "nfs-stalled", f"relay :{self.port} holds its traffic")

    def resume(self):
        self.flowing.set()
        if self.timeline:
            self.timeline.add(self.name, "nfs-resumed", f"relay :{self.port} flows again")

    def close(self):
        self.closed = True
        self.flowing.set()
        for s in [self.lsock] + self.socks:
            try:
                s.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------
# NFS server (nfs-ganesha, userspace) on the host's loopback
# ---------------------------------------------------------------------------

class NfsServer:
    """nfs-ganesha serving DIR/export as NFSv4.1 `/export` on 127.0.0.1:<free port> (the guests
    reach it as 10.0.2.2:<port> through slirp). Foreground process of ours: stopped by stop() and
    by the run's cleanup; pause()/resume() are SIGSTOP/SIGCONT (a server that hangs, not one that
    refuses: the guests' hard mounts block)."""

    VOLUME_NAME = "hb.img"

    def __init__(self, d: Path, timeline: Timeline | None = None):
        self.dir = d
        self.export = d / "export"
        self.volume = self.export / self.VOLUME_NAME
        self.timeline = timeline
        self.proc = None
        self.paused = False
        self.port = free_tcp_port()
        (d / "recovery").mkdir(parents=True, exist_ok=True)
        self.export.mkdir(parents=True, exist_ok=True)
        self.conf = d / "ganesha.conf"
        # Graceless: no 90 s grace period after a start; Only_Numeric_Owners: the guests have no
        # idmapd (files would show as nobody); Lease_Lifetime 10: the NFSv4 state of a guest that
        # was reset expires soon.
        self.conf.write_text(f"""NFS_CORE_PARAM {{ Protocols = 4; NFS_Port = {self.port}; Bind_addr = 127.0.0.1;
                 Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; }}
NFS_KRB5 {{ Active_krb5 = false; }}
NFSv4 {{ Graceless = true; Lease_Lifetime = 10; RecoveryBackend = fs;
        RecoveryRoot = "{d / 'recovery'}"; Minor_Versions = 1, 2; Only_Numeric_Owners = true; }}
EXPORT_DEFAULTS {{ SecType = sys; }}
EXPORT {{ Export_Id = 1; Path = "{self.export}"; Pseudo = /export; Protocols = 4;
         Transports = TCP; Access_Type = RW; Squash = No_Root_Squash; Disable_ACL = true;
         FSAL {{ Name = VFS; }} }}
""")
        cleanup().add(self.stop)

    def start(self, timeout: float = 20.0):
        pidfile = self.dir / "ganesha.pid"
        logf = open(self.dir / "ganesha.out", "ab")
        self.proc = subprocess.Popen(
            ["ganesha.nfsd", "-F", "-f", str(self.conf), "-L", str(self.dir / "ganesha.log"),
             "-p", str(pidfile)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, cwd=self.dir)
        logf.close()
        pidfile.write_text(f"{self.proc.pid}\n")   # for kill_stale until ganesha writes it itself
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ganesha.nfsd not listening on 127.0.0.1:{self.port} "
                                   f"(rc {self.proc.poll()}):\n{self.log_tail()}")
            time.sleep(0.05)
        if self.timeline:
            self.timeline.add("nfs", "nfs-started", f"ganesha pid {self.proc.pid} port {self.port}")

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True
        if self.timeline:
            self.timeline.add("nfs", "nfs-paused", "SIGSTOP ganesha.nfsd")

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False
        if self.timeline:
            self.timeline.add("nfs", "nfs-resumed", "SIGCONT ganesha.nfsd")

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)   # a stopped process does not act on SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def relay(self, name: str) -> "StallRelay":
        """A TCP relay of its own in front of this server (a guest mounts through its port), whose
        stall() stalls only that guest's NFS traffic."""
        r = StallRelay(("127.0.0.1", self.port), name, self.timeline)
        cleanup().add(r.close)
        return r

    def log_tail(self, n=20) -> str:
        out = []
        for f in ("ganesha.log", "ganesha.out"):
            try:
                out += (self.dir / f).read_text(errors="replace").splitlines()[-n:]
            except FileNotFoundError:
                pass
        return "\n".join(out)


class Cluster:
    """n VMs sharing one raw disk image (the heartbeat volume), each with its own BMC.

    files_for(i, cluster) -> {guest_path: bytes | str | host Path}: files delivered to VM i through
    fw_cfg (the BMC ports, cluster.bmc_ports, are known by then, for the agent's config).
    watchdog_action: one action for all VMs or a list, one per VM."""

    def __init__(self, n: int, kernel: Kernel, initrd: Path, rundir: Path,
                 watchdog_action="reset", bmcs=True, files_for=None, cmdline_extra="",
                 disk_mib: int = 16, timeline: Timeline | None = None,
                 nfs: "NfsServer | None" = None, nfs_relays: bool = False,
                 peer_segment: bool = False):
        """nfs: the guests mount this server's export on /mnt/nfs and get no block device; the
        volume (self.disk) is then nfs.volume, a file in the export. nfs_relays: each VM mounts
        through a StallRelay of its own (self.relays[i]). peer_segment: every VM gets eth1 =
        peer_address(i) on a segment of their own (a free multicast port on lo)."""
        self.n = n
        self.rundir = rundir
        self.timeline = timeline or Timeline()
        self.nfs = nfs
        self.disk = nfs.volume if nfs else make_shared_disk(rundir / "shared.img", disk_mib)
        segment = f"{PEER_SEGMENT_GROUP}:{free_udp_port()}" if peer_segment else None
        self.relays = {i: nfs.relay(f"vm{i}") for i in range(1, n + 1)} if nfs and nfs_relays else {}
        self.vms: list = []
        self.bmcs: list = []
        self.bmc_ports: dict = {}
        if bmcs:
            while len(set(self.bmc_ports.values())) < n:
                self.bmc_ports = {i: free_udp_port() for i in range(1, n + 1)}
        cleanup().add(self.shutdown)
        actions = watchdog_action if isinstance(watchdog_action, (list, tuple)) else [watchdog_action] * n
        for i in range(1, n + 1):
            vmdir = rundir / f"vm{i}"
            extra = cmdline_extra
            if nfs:
                extra += f" hbfence.nfs={self.relays[i].port if self.relays else nfs.port}"
            if segment:
                extra += f" hbfence.eth1={peer_address(i)}/24"
            cfg = VMConfig(vm_id=i, name=f"vm{i}", kernel=kernel.vmlinuz, initrd=initrd,
                           shared_disk=None if nfs else self.disk, vmdir=vmdir,
                           watchdog_action=actions[i - 1], cmdline_extra=extra.strip(),
                           peer_segment=segment)
            for gp, content in (files_for(i, self) if files_for else {}).items():
                cfg.files[gp] = self._host_file(vmdir, gp, content)
            vm = VM(cfg, self.timeline)
            self.vms.append(vm)
            if bmcs:
                self.bmcs.append(BMC(vm, self.bmc_ports[i]))

    @staticmethod
    def _host_file(vmdir: Path, guest_path: str, content) -> Path:
        if isinstance(content, Path):
            return content
        hp = vmdir / "fw_cfg" / guest_path.lstrip("/")
        hp.parent.mkdir(parents=True, exist_ok=True)
        hp.write_bytes(content if isinstance(content, bytes) else content.encode())
        return hp

    def vm(self, i: int) -> VM:
        return self.vms[i - 1]

    def start(self, ready_timeout: float = 180.0):
        for b in self.bmcs:
            b.start()
        for vm in self.vms:
            vm.start()
        for vm in self.vms:
            vm.wait_ready(ready_timeout)

    def shutdown(self):
        for vm in self.vms:
            vm.stop_watching()
            try:
                vm.stop(timeout=2)
            except Exception as e:
                print(f"cleanup {vm.name}: {e}", file=sys.stderr)
            for c in (vm.qmp, vm.chan):
                if c:
                    c.close()
        for b in self.bmcs:
            b.stop()


# ---------------------------------------------------------------------------
# Agent configuration (for the scenarios that run hbfence in the guests)
# ---------------------------------------------------------------------------

def agent_config(host_id: int, n_hosts: int, bmc_ports: dict, volume="/dev/vda",
                 coordinator=True, password_dir="/etc/hbfence/bmc", extra: str = "",
                 fencing: dict | None = None, self_fence: str = "reboot",
                 peer_channel: bool = False) -> str:
    """hbfence.toml for guest host_id. Peers' BMCs are reached at 10.0.2.2:port (the host's
    ipmi_sim through slirp) with cipher suite 3 (ipmi_sim has no SHA-256 suites such as 17).
    fencing: extra [fencing] keys (e.g. {"timeout": 20, "command_timeout": 5}).
    peer_channel: [network] on the peer segment (eth1, peer_address) with the cluster key at
    PEER_KEY_PATH, and every [[peer]] with its address there."""
    fence_lines = ['ipmitool = "/usr/bin/ipmitool"'] + [
        f"{k} = {json.dumps(v)}" for k, v in (fencing or {}).items()]
    lines = [
        "[host]", f"id = {host_id}", f'name = "vm{host_id}"', "",
        "[[volume]]", f'path = "{volume}"', "",
        "[watchdog]", 'device = "/dev/watchdog"', "",
        "[self_fence]", f'action = "{self_fence}"', 'sysrq_trigger = "/proc/sysrq-trigger"', "",
        "[coordinator]", f"eligible = {'true' if coordinator else 'false'}", "",
        "[fencing]", *fence_lines, "",
        "[events]", 'log = "/run/hbfence/events.jsonl"', 'hooks_dir = "/etc/hbfence/hooks.d"', "",
        "[daemon]", 'runtime_dir = "/run/hbfence"', "syslog = false", "",
    ]
    if peer_channel:
        lines += ["[network]", f'listen = "{peer_address(host_id)}:{PEER_PORT}"',
                  f'key_file = "{PEER_KEY_PATH}"', ""]
    for pid in range(1, n_hosts + 1):
        if pid == host_id:
            continue
        lines += ["[[peer]]", f"id = {pid}", f'name = "vm{pid}"']
        if peer_channel:
            lines.append(f'address = "{peer_address(pid)}:{PEER_PORT}"')
        if pid in bmc_ports:
            lines.append(f'bmc = {{ address = "10.0.2.2", port = {bmc_ports[pid]}, username = "{BMC_USER}", '
                         f'password_file = "{password_dir}/vm{pid}", cipher_suite = 3 }}')
        lines.append("")
    return "\n".join(lines) + extra


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def main(argv: list) -> int:
    if len(argv) >= 1 and argv[0] == "bmc-chassis":
        return bmc_chassis_main(argv[1:])
    if len(argv) == 2 and argv[0] == "reaper":
        return reaper_main(argv[1])
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: hbvm.py kernel | initramfs [PAYLOAD] | bmc-chassis VMDIR get|set ...")
        return 0
    if argv[0] == "kernel":
        ensure_host_tools()
        k = ensure_kernel()
        print(json.dumps({"package": k.package, "deb_version": k.deb_version, "release": k.release,
                          "vmlinuz": str(k.vmlinuz)}, indent=1))
        return 0
    if argv[0] == "initramfs":
        ensure_host_tools()
        k = ensure_kernel()
        print(build_initramfs(k, payload=argv[1] if len(argv) > 1 else None))
        return 0
    print(f"unknown command {argv[0]}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
