#!/usr/bin/env python3
"""hbfence kernel-level tests in qemu (TCG): the scenarios and their runner. Started by ./run:
    tests/vm/run [--list] [--keep N] [SCENARIO...]

No SCENARIO: all of them. Logs: $HBFENCE_VM_CACHE/runs/<run>/ (default /var/tmp/hbfence-vm).
The agent scenarios need a statically linked hbfence: the runner builds it from the work tree
(cargo build --release --target x86_64-unknown-linux-gnu with +crt-static, into its own target
directory) unless HBFENCE_AGENT names one. With CI=true nothing is skipped: a scenario that cannot
run fails. See README.md next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

sys.dont_write_bytecode = True   # no __pycache__ in the work tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import hbvm  # noqa: E402
from hbvm import log  # noqa: E402

REPO = Path(__file__).resolve().parent.parent.parent
GUEST_TARGET = "x86_64-unknown-linux-gnu"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class StepFailed(Exception):
    pass


class Skip(Exception):
    pass


# ---------------------------------------------------------------------------
# Timing of the agent scenarios
# ---------------------------------------------------------------------------

# hbfence init options of the agent scenarios (seconds). Measured on 2 cores with 3 TCG guests
# (README.md, "Timings"): even at load 16 the longest gap between two records of a healthy guest,
# as seen from the host, was 1.7 s and no guest logged storage_degraded or host_suspect with
# interval 1 / lease 4 / watchdog 2 / suspect 3. These values keep about twice that margin
# everywhere: the lease survives 4-5 lost cycles, the watchdog 3.5 s of a starved vCPU, and a
# peer looks suspect only after 4 s without progress.
# Override for experiments: HBFENCE_VM_TIMING="interval=2,lease-timeout=8,...".
AGENT_TIMING = {"interval": 1, "io-timeout": 2, "lease-timeout": 8, "watchdog-timeout": 4,
                "suspect-after": 4}


def agent_timing() -> dict:
    t = dict(AGENT_TIMING)
    for kv in filter(None, os.environ.get("HBFENCE_VM_TIMING", "").split(",")):
        k, _, v = kv.partition("=")
        k = k.strip().replace("_", "-")
        if k not in t:
            raise SystemExit(f"HBFENCE_VM_TIMING: unknown key {k!r} (known: {', '.join(t)})")
        t[k] = float(v) if "." in v else int(v)
    return t


class Timing:
    """The cluster timing in seconds, as attributes (t.interval, t.lease, ...)."""

    def __init__(self, d: dict):
        self.d = d
        self.interval = float(d["interval"])
        self.io = float(d["io-timeout"])
        self.lease = float(d["lease-timeout"])
        self.watchdog = float(d["watchdog-timeout"])
        self.suspect = float(d["suspect-after"])
        self.margin = max(self.interval, 1.0)
        self.dead_after = self.lease + self.io + self.watchdog + self.margin

    def __str__(self):
        return (f"interval {self.interval:g}s, io_timeout {self.io:g}s, lease {self.lease:g}s, "
                f"watchdog {self.watchdog:g}s, suspect_after {self.suspect:g}s, "
                f"dead_after {self.dead_after:g}s")


PETS_PER_WATCHDOG = 4   # the agent pets every watchdog_timeout/4 (core::agent PETS_PER_WATCHDOG)

# Guest console lines that go into the timeline: the agent's log and the kernel's reset messages.
CONSOLE_TIMELINE = (r"hbfence\[\d+\]: |sysrq: |watchdog did not stop|unexpected close|"
                    r"^kernel boot: |hbvm: starting hbfence")
READY_LINE = r"hbfence\[\d+\]: .*first heartbeat written with the watchdog armed: ready"


# ---------------------------------------------------------------------------
# Scenario context
# ---------------------------------------------------------------------------

class Ctx:
    """What a scenario gets: kernel, initramfs builder, a run directory, steps and a timeline."""

    def __init__(self, name: str, rundir: Path, kernel: hbvm.Kernel, agent: str | None = None):
        self.name = name
        self.rundir = rundir
        self.kernel = kernel
        self.agent = agent
        self.timeline = hbvm.Timeline()
        self.cluster = None
        self.volume = None
        self.nfs = None
        self.timings = {}
        self.t = Timing(agent_timing())

    def initramfs(self, payload=None):
        return hbvm.build_initramfs(self.kernel, payload=payload)

    def make_cluster(self, n=3, **kw) -> hbvm.Cluster:
        self.cluster = hbvm.Cluster(n, self.kernel, kw.pop("initrd", None) or self.initramfs(),
                                    self.rundir, timeline=self.timeline, **kw)
        return self.cluster

    def agent_cluster(self, n=3, watchdog_action="reset", coordinators=None,
                      with_bmc: bool = True, extra_config: str = "", nfs: bool = False,
                      peer_channel: bool = False, init_extra=(), nfs_relays: bool = False) -> hbvm.Cluster:
        """For the agent scenarios: n VMs running the agent (autostarted at boot with a generated
        /etc/hbfence/hbfence.toml, BMC password files), the shared volume initialised on the host
        with `hbfence init` and AGENT_TIMING; every guest console watched into the timeline.
        coordinators: ids eligible as coordinator (default: all).
        with_bmc=False: the peers get no `bmc` in the config (no IPMI fencing), for scenarios that
        must see the watchdog or the self-fence: with a BMC the coordinator powers a silent peer
        off after suspect_after, which is shorter than lease_timeout and the watchdog bound.
        nfs=True: the volume is a file on the host's NFS server (ganesha, started here), mounted
        by every guest (hard) on /mnt/nfs; no block device; nfs_relays=True: each guest through a
        stallable relay of its own (cl.relays). peer_channel=True: [network] on a
        second NIC per guest with one key made by `hbfence keygen`. init_extra: more `hbfence
        init` arguments."""
        if not self.agent:
            raise Skip("no static hbfence agent (build failed or HBFENCE_AGENT not set)")
        coordinators = range(1, n + 1) if coordinators is None else coordinators
        fencing = {"timeout": 20, "command_timeout": 8}
        server = None
        if nfs:
            server = self.nfs = hbvm.NfsServer(self.rundir / "nfs", self.timeline)
            server.start()
        key = None
        if peer_channel:
            key = self.rundir / "cluster.key"
            r = hbvm.run([self.agent, "keygen", "--output", str(key)], check=False, capture_output=True)
            if r.returncode != 0:
                raise StepFailed(f"hbfence keygen --output {key}: rc={r.returncode}\n{r.stdout}{r.stderr}")
        volume = f"/mnt/nfs/{hbvm.NfsServer.VOLUME_NAME}" if nfs else "/dev/vda"

        def files(i, cl):
            f = {"/etc/hbfence/hbfence.toml": hbvm.agent_config(
                i, n, cl.bmc_ports if with_bmc else {}, coordinator=i in coordinators,
                extra=extra_config, fencing=fencing, volume=volume, peer_channel=peer_channel)}
            if key:
                f[hbvm.PEER_KEY_PATH] = key
            if with_bmc:
                for p in cl.bmc_ports:
                    if p != i:
                        f[f"/etc/hbfence/bmc/vm{p}"] = hbvm.BMC_PASSWORD + "\n"
            return f

        cl = self.make_cluster(n, initrd=self.initramfs(payload=self.agent), files_for=files,
                               watchdog_action=watchdog_action, bmcs=with_bmc, nfs=server,
                               nfs_relays=nfs_relays, peer_segment=peer_channel)
        args = [self.agent, "init", "--volume", str(cl.disk), "--max-hosts", "8", *init_extra]
        for k, v in self.t.d.items():
            args += [f"--{k}", str(v)]
        r = hbvm.run(args, check=False, capture_output=True)
        if r.returncode != 0:
            raise StepFailed(f"{' '.join(args)}: rc={r.returncode}\n{r.stdout}{r.stderr}")
        for vm in cl.vms:
            vm.watch_console(CONSOLE_TIMELINE)
        self.volume = VolumeWatch(self.agent, cl, self.timeline)
        return cl

    def start_agents(self, cl: hbvm.Cluster, timeout: float = 150.0):
        """Start BMCs and VMs, wait until every guest's agent logged that it is ready (first
        heartbeat written with the watchdog armed) and the volume shows all of them active."""
        with self.step(f"start {len(cl.vms)} VMs, each agent ready (watchdog armed, first heartbeat)"):
            t0 = time.monotonic()
            cl.start(ready_timeout=timeout)
            self.timings["VMs booted (command channel)"] = time.monotonic() - t0
            for vm in cl.vms:
                left = max(5.0, timeout - (time.monotonic() - t0))
                self.check(vm.wait_console(READY_LINE, left, since=0), f"{vm.name}: agent not ready in {timeout:.0f}s")
            self.timings["agents ready (all)"] = time.monotonic() - t0
            self.volume.start()
            ids = [vm.cfg.vm_id for vm in cl.vms]
            st = self.volume.wait(lambda h: all(h.get(i, {}).get("state") == "active" for i in ids), 30)
            self.check(st is not None, f"volume: not all of {ids} active: {self.volume.summary()}")
            log(f"  ready after {self.timings['agents ready (all)']:.1f}s; volume: {self.volume.summary()}")

    def step(self, title: str):
        return _Step(self, title)

    def check(self, cond, msg: str):
        if not cond:
            raise StepFailed(msg)

    def print_timeline(self, origin: float, title: str, before: float = 3.0):
        print(f"  timeline ({title}; seconds since the fault, host monotonic clock):")
        self.timeline.print(origin=origin, since=origin - before)


class _Step:
    def __init__(self, ctx, title):
        self.ctx, self.title = ctx, title

    def __enter__(self):
        self.t = time.monotonic()
        log(f"STEP  {self.title}")
        return self

    def __exit__(self, et, ev, tb):
        dt = time.monotonic() - self.t
        if et is None:
            log(f"  ok  {self.title} ({dt:.1f}s)")
            return False
        if et is Skip:
            return False
        log(f"FAIL  {self.title} ({dt:.1f}s): {ev}")
        if not isinstance(ev, StepFailed):
            traceback.print_exception(et, ev, tb)
        raise StepFailed(f"step '{self.title}' failed: {ev}") from None


# ---------------------------------------------------------------------------
# The volume, read from the host while the guests write it
# ---------------------------------------------------------------------------

class VolumeWatch:
    """Polls `hbfence status --volume IMAGE --json` on the host (O_DIRECT reads of the raw image
    the guests share) every 0.5 s. Keeps, per host id, every (time, seq) change, and puts changes
    of state, incarnation, verdict and coordinator into the timeline ("volume" lines)."""

    def __init__(self, agent: str, cl: hbvm.Cluster, timeline: hbvm.Timeline, period: float = 0.5):
        self.agent, self.disk, self.timeline, self.period = agent, cl.disk, timeline, period
        self.gap_note = 3.0   # a record change after this long without one goes into the timeline
        self.names = {vm.cfg.vm_id: vm.name for vm in cl.vms}
        self.cond = threading.Condition()
        self.hosts: dict = {}         # id -> last host record (status JSON + verdict/method)
        self.coordinator = None
        self.seq_changes: dict = {}   # id -> [(t, seq)]
        self.errors: list = []
        self.polls = 0
        self.stop_ev = threading.Event()
        self.thread = None

    def read(self) -> dict:
        r = hbvm.run([self.agent, "status", "--volume", str(self.disk), "--json"], check=False,
                     capture_output=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"hbfence status --volume: rc={r.returncode}: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def start(self):
        self._poll()
        self.thread = threading.Thread(target=self._run, daemon=True, name="volume-watch")
        self.thread.start()
        hbvm.cleanup().add(self.stop)

    def stop(self):
        self.stop_ev.set()

    def _run(self):
        while not self.stop_ev.wait(self.period):
            try:
                self._poll()
            except Exception as e:   # noqa: BLE001 - recorded, checked by the scenarios
                self.errors.append(f"{time.monotonic():.1f}: {e}")

    def _poll(self):
        d = self.read()
        t = time.monotonic()
        with self.cond:
            self.polls += 1
            if d.get("coordinator") != self.coordinator:
                self.timeline.add("volume", "coordinator", f"{self._name(d.get('coordinator'))}", t)
                self.coordinator = d.get("coordinator")
            for h in d["hosts"]:
                i = h["id"]
                old = self.hosts.get(i)
                who = self._name(i)
                if old is None or h["seq"] != old["seq"] or h["incarnation"] != old["incarnation"]:
                    ch = self.seq_changes.setdefault(i, [])
                    if old is not None and ch and t - ch[-1][0] > self.gap_note and h["incarnation"] == old["incarnation"]:
                        self.timeline.add(who, "volume", f"seq {old['seq']} -> {h['seq']} after "
                                          f"{t - ch[-1][0]:.1f}s without a change (state {h['state']})", t)
                    ch.append((t, h["seq"]))
                if old is None or h["incarnation"] != old["incarnation"]:
                    self.timeline.add(who, "volume", f"incarnation {h['incarnation']} state {h['state']} "
                                      f"seq {h['seq']} caps {','.join(h['capabilities'])}", t)
                elif h["state"] != old["state"]:
                    self.timeline.add(who, "volume", f"state {old['state']} -> {h['state']} (seq {h['seq']})", t)
                if (old or {}).get("verdict") != h.get("verdict") or (old or {}).get("method") != h.get("method"):
                    if old is not None or h.get("verdict"):
                        self.timeline.add(who, "volume", f"verdict {h.get('verdict')} (method {h.get('method')})", t)
                self.hosts[i] = h
            self.cond.notify_all()

    def _name(self, i):
        return self.names.get(i, f"host{i}") if i else "none"

    def wait(self, pred, timeout: float):
        """Wait until pred(hosts) is true; returns the poll time, None on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self.hosts and pred(self.hosts):
                    return time.monotonic()
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 1.0))

    def host(self, i: int) -> dict:
        with self.cond:
            return dict(self.hosts.get(i, {}))

    def max_gap(self, i: int, t0: float, t1: float) -> float:
        """Longest time within [t0, t1] in which host i's record did not change (as seen here)."""
        with self.cond:
            times = [t for t, _ in self.seq_changes.get(i, []) if t0 <= t <= t1]
        pts = [t0] + times + [t1]
        return max(b - a for a, b in zip(pts, pts[1:]))

    def last_change(self, i: int, before: float) -> float:
        """Time of the last change of host i's record seen here before `before`."""
        with self.cond:
            times = [t for t, _ in self.seq_changes.get(i, []) if t < before]
        return times[-1] if times else 0.0

    def changed_since(self, i: int, t: float) -> bool:
        """Host i's record changed (as seen here) after t."""
        with self.cond:
            return any(tc > t for tc, _ in self.seq_changes.get(i, []))

    def summary(self) -> str:
        with self.cond:
            return ", ".join(f"{self._name(i)}: {h['state']} seq {h['seq']}"
                             + (f" {h['verdict']}({h['method']})" if h.get("verdict") else "")
                             for i, h in sorted(self.hosts.items()))


# ---------------------------------------------------------------------------
# Checks shared by the scenarios
# ---------------------------------------------------------------------------

BAD_EVENTS = ("RESET", "WATCHDOG", "SHUTDOWN")


def qmp_events(vm: hbvm.VM, names=BAD_EVENTS, since: float = 0.0) -> list:
    if not vm.qmp:
        return []
    with vm.qmp.cond:
        return [e for e in vm.qmp.events if e["event"] in names and e["t"] >= since]


def check_undisturbed(ctx: Ctx, vms, since: float, until: float | None = None):
    """These VMs saw no RESET/WATCHDOG/SHUTDOWN since `since`, their qemu still runs, their agent
    did not self-fence, and their records kept advancing (no gap of lease_timeout)."""
    until = until or time.monotonic()
    for vm in vms:
        ev = qmp_events(vm, BAD_EVENTS, since)
        ctx.check(not ev, f"{vm.name}: unexpected QMP events {[(e['event'], e['data']) for e in ev]}")
        ctx.check(vm.alive(), f"{vm.name}: qemu is gone")
        gap = ctx.volume.max_gap(vm.cfg.vm_id, since, until)
        ctx.check(gap < ctx.t.lease, f"{vm.name}: its record did not advance for {gap:.1f}s "
                  f"(lease_timeout {ctx.t.lease:g}s)")


def check_bounds(ctx: Ctx, what: str, dt: float, lo: float, hi: float):
    ctx.timings[what] = dt
    ctx.check(lo <= dt <= hi, f"{what}: {dt:.2f}s, expected within [{lo:.2f}, {hi:.2f}]s")
    log(f"  {what}: {dt:.2f}s (bounds [{lo:.2f}, {hi:.2f}]s)")


def agent_pid(vm: hbvm.VM) -> str:
    _, out = vm.sh("pidof hbfence", timeout=20)
    pid = out.strip()
    if not pid.isdigit():
        raise StepFailed(f"{vm.name}: pidof hbfence: {out!r}")
    return pid


def guest_events(vm: hbvm.VM) -> list:
    """The agent's JSON-lines event log in the guest ([events] log)."""
    _, out = vm.sh("cat /run/hbfence/events.jsonl 2>/dev/null; true", timeout=20)
    evs = []
    for line in out.splitlines():
        try:
            evs.append(json.loads(line))
        except ValueError:
            pass
    return evs


def wait_rejoined(ctx: Ctx, vm: hbvm.VM, old_incarnation, console_since: int, timeout: float = 150.0):
    """After a reset of vm: the guest boots again, its agent is ready and the volume shows a new
    incarnation of it, active."""
    ctx.check(vm.wait_console(READY_LINE, timeout, since=console_since),
              f"{vm.name}: agent not ready again within {timeout:.0f}s after the reset")
    i = vm.cfg.vm_id
    t = ctx.volume.wait(lambda h: h.get(i, {}).get("incarnation") not in (None, old_incarnation)
                        and h[i]["state"] == "active", 30)
    ctx.check(t is not None, f"{vm.name}: no new active incarnation on the volume: {ctx.volume.host(i)}")
    return t


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------

WATCHDOG_T = 5   # busybox watchdog -T (seconds), smoke test

# Stands in for the agent in the smoke test: proves autostart, arguments and config delivery.
AGENT_STUB = """#!/bin/sh
echo "hbfence-stub: started with: $*"
[ "$1" = run ] && [ "$2" = --config ] || exit 2
cp "$3" /run/hbfence-stub.toml
trap 'echo "hbfence-stub: SIGTERM"; exit 0' TERM
while :; do sleep 1; done
"""


def scenario_watchdog_smoke(ctx: Ctx):
    """Infrastructure smoke test (no agent): shared disk, UDP, disk stall, i6300esb, BMCs.

    3 VMs share a disk; O_DIRECT blocks visible across VMs; guest -> host UDP; disk stall of one
    VM; i6300esb fires (reset, then poweroff) after SIGKILL of its petter; BMC power off/on from
    the host and power off from a guest's ipmitool."""
    with ctx.step("build kernel/initramfs (agent stub as payload) and define 3 VMs + 3 BMCs"):
        stub = ctx.rundir / "hbfence-stub"
        stub.write_text(AGENT_STUB)
        stub.chmod(0o755)

        def files(i, cl):
            f = {"/etc/hbfence/hbfence.toml": hbvm.agent_config(i, 3, cl.bmc_ports)}
            for p in cl.bmc_ports:
                if p != i:
                    f[f"/etc/hbfence/bmc/vm{p}"] = hbvm.BMC_PASSWORD + "\n"
            return f

        cl = ctx.make_cluster(3, watchdog_action="reset", initrd=ctx.initramfs(payload=str(stub)),
                              files_for=files)
        vm1, vm2, vm3 = cl.vms

    with ctx.step("start 3 BMCs (ipmi_sim) and 3 VMs in parallel, wait for the guests"):
        for b in cl.bmcs:
            b.start()
        t0 = time.monotonic()
        for vm in cl.vms:
            vm.start()
        for vm in cl.vms:
            r = vm.wait_ready(180)
            ctx.timings[f"{vm.name} ready"] = r[0] - t0
        ctx.timings["3 VMs booted (parallel)"] = time.monotonic() - t0
        log("  boot: " + ", ".join(f"{k} {v:.1f}s" for k, v in ctx.timings.items()))

    with ctx.step("payload: /usr/sbin/hbfence autostarted with the per-VM config from fw_cfg"):
        for vm in cl.vms:
            _, out = vm.sh("pidof hbfence && cat /run/hbfence-stub.toml && stat -c '%a %n' /etc/hbfence/bmc/*")
            ctx.check(f"id = {vm.cfg.vm_id}" in out, f"{vm.name}: config not delivered: {out!r}")
            ctx.check("600 /etc/hbfence/bmc/" in out, f"{vm.name}: password files: {out!r}")

    with ctx.step("each guest writes its own 4096-byte block with dd oflag=direct"):
        for vm in cl.vms:
            i = vm.cfg.vm_id
            vm.sh(f"printf 'hbvm block of {vm.name} boot %s\\n' $(cut -c1-8 /proc/sys/kernel/random/boot_id) "
                  f"> /tmp/blk; dd if=/tmp/blk of=/tmp/blk.pad bs=4096 count=1 conv=sync 2>/dev/null; "
                  f"dd if=/tmp/blk.pad of=/dev/vda bs=4096 seek={i} count=1 oflag=direct conv=notrunc")

    with ctx.step("every guest reads every block with dd iflag=direct"):
        for reader in cl.vms:
            for owner in cl.vms:
                _, out = reader.sh(f"dd if=/dev/vda bs=4096 skip={owner.cfg.vm_id} count=1 iflag=direct "
                                   f"2>/dev/null | head -c 64 | head -n1")
                ctx.check(f"hbvm block of {owner.name} boot" in out,
                          f"{reader.name} reads block {owner.cfg.vm_id}: {out!r}")

    with ctx.step("guest reaches a UDP port on the host (10.0.2.2 -> 127.0.0.1)"):
        srv = hbvm.UdpProbe()
        try:
            _, out = vm1.sh(f"cd /tmp && tftp -g -r probe -l probe.txt 10.0.2.2 {srv.port} && cat probe.txt",
                            timeout=20)
            ctx.check("hbvm-udp-ok" in out and srv.hits, f"tftp probe: {out!r}, host saw {srv.hits}")
        finally:
            srv.close()

    with ctx.step("guest ipmitool (from the initramfs) queries a peer's BMC: power on"):
        port = vm2.bmc.port
        _, out = vm1.sh(f"ipmitool -I lanplus -C 3 -H 10.0.2.2 -p {port} -U {hbvm.BMC_USER} "
                        f"-f /etc/hbfence/bmc/vm2 -N 1 -R 3 chassis power status", timeout=30)
        ctx.check("Chassis Power is on" in out, f"vm1 -> vm2 BMC: {out!r}")

    with ctx.step("disk stall: vm1's dd to the shared disk hangs, vm2's completes, vm1 keeps running"):
        vm1.stall_disk()
        t_stall = time.monotonic()
        c1 = vm1.chan.start("dd if=/dev/zero of=/dev/vda bs=4096 seek=64 count=1 oflag=direct 2>&1")
        c2 = vm2.chan.start("dd if=/dev/zero of=/dev/vda bs=4096 seek=65 count=1 oflag=direct 2>&1")
        r2 = vm2.chan.wait(c2, 20)
        ctx.check(r2 is not None and r2[0] == 0, f"vm2 dd: {r2}")
        r1 = vm1.chan.wait(c1, 8)
        ctx.check(r1 is None, f"vm1 dd completed although its disk is stalled: {r1}")
        _, out = vm1.sh("echo alive; cut -d' ' -f1 /proc/uptime", timeout=10)
        ctx.check("alive" in out, "vm1 command channel does not answer during the stall")
        st = vm1.qmp.execute("query-status")
        ctx.check(st["status"] == "running", f"vm1 status {st}")
        log(f"  vm1 dd still blocked {time.monotonic() - t_stall:.1f}s after the stall; vm2 dd done")
        vm1.resume_disk()
        r1 = vm1.chan.wait(c1, 20)
        ctx.check(r1 is not None and r1[0] == 0, f"vm1 dd did not complete after resume: {r1}")

    with ctx.step(f"watchdog (action reset): busybox watchdog -T {WATCHDOG_T} on vm3, kill -9 -> WATCHDOG + RESET"):
        _watchdog_fire(ctx, vm3, "reset")

    with ctx.step("watchdog (action poweroff, set at run time): kill -9 -> WATCHDOG, qemu exits"):
        vm3.qmp.execute("watchdog-set-action", {"action": "poweroff"})
        _watchdog_fire(ctx, vm3, "poweroff")

    with ctx.step("BMC: ipmitool -C 3 chassis power off from the host -> vm2's qemu is gone, status off"):
        ctx.check(vm2.bmc.power_status() == "on", "vm2 not reported on before power off")
        t = ctx.timeline.mark("bmc-power-off", "test", "vm2 via host ipmitool")
        vm2.bmc.ipmitool("chassis", "power", "off")
        ctx.timings["BMC power off (ipmitool returns)"] = time.monotonic() - t
        ctx.check(not vm2.alive(), "vm2 qemu still running after ipmitool returned")
        st = vm2.bmc.power_status()
        ctx.check(st == "off", f"BMC reports {st!r}")
        time.sleep(0.2)
        ctx.timeline.print(origin=t, since=t - 0.001)

    with ctx.step("BMC: chassis power on -> qemu relaunched, guest boots, status on"):
        t = ctx.timeline.mark("bmc-power-on", "test", "vm2 via host ipmitool")
        vm2.bmc.ipmitool("chassis", "power", "on")
        vm2.attach()
        vm2.wait_ready(120)
        ctx.timings["BMC power on -> guest ready"] = time.monotonic() - t
        st = vm2.bmc.power_status()
        ctx.check(st == "on", f"BMC reports {st!r}")

    with ctx.step("coordinator path: vm1's ipmitool powers vm2 off through vm2's BMC"):
        t = ctx.timeline.mark("guest-power-off", "vm1", "ipmitool chassis power off (vm2)")
        ipmi = (f"ipmitool -I lanplus -C 3 -H 10.0.2.2 -p {vm2.bmc.port} -U {hbvm.BMC_USER} "
                f"-f /etc/hbfence/bmc/vm2 -N 1 -R 3")
        _, out = vm1.sh(f"{ipmi} chassis power off && {ipmi} chassis power status", timeout=40)
        ctx.check("Chassis Power is off" in out, f"vm1 ipmitool: {out!r}")
        ctx.check(not vm2.alive(), "vm2 qemu still running")
        ctx.timings["guest ipmitool power off + status"] = time.monotonic() - t
        time.sleep(0.2)
        ctx.timeline.print(origin=t, since=t - 0.001)


def _watchdog_fire(ctx: Ctx, vm: hbvm.VM, action: str):
    boots = vm.boots
    vm.sh(f"watchdog -T {WATCHDOG_T} -t 1 -F /dev/watchdog >/dev/null 2>&1 & echo $! > /tmp/wd.pid; sleep 1; "
          "kill -0 $(cat /tmp/wd.pid)")
    time.sleep(2)   # several pets
    t_fault = ctx.timeline.mark(f"fault-{action}", vm.name, f"kill -9 watchdog (T={WATCHDOG_T}s)")
    vm.sh("kill -9 $(cat /tmp/wd.pid)", timeout=10)
    ev = vm.qmp.wait_event("WATCHDOG", timeout=WATCHDOG_T * 3 + 15, since=t_fault)
    ctx.check(ev is not None, f"no WATCHDOG event within {WATCHDOG_T * 3 + 15}s")
    ctx.check(ev["data"].get("action") == action, f"WATCHDOG action {ev['data']} != {action}")
    dt = ev["t"] - t_fault
    ctx.timings[f"watchdog fire after kill -9 (T={WATCHDOG_T}s, {action})"] = dt
    ctx.check(WATCHDOG_T * 0.8 <= dt <= WATCHDOG_T * 2 + 5, f"WATCHDOG after {dt:.1f}s, expected ~{WATCHDOG_T}s")
    if action == "reset":
        r = vm.qmp.wait_event("RESET", timeout=10, since=ev["t"])
        ctx.check(r is not None, "no RESET event after WATCHDOG")
        vm.wait_ready(120, after_boot=boots)
        ctx.timings["watchdog reset -> guest ready again"] = time.monotonic() - r["t"]
    else:
        # qemu 7.2 exits at once on a watchdog poweroff (no SHUTDOWN event; newer ones may send one)
        ctx.check(vm.wait_gone(10), "qemu still running 10s after the watchdog poweroff")
        ctx.timings["watchdog poweroff -> qemu gone"] = time.monotonic() - ev["t"]
    time.sleep(0.2)   # let the exit watcher record qemu-exited
    print(f"  timeline ({vm.name}, seconds since the fault):")
    ctx.timeline.print(origin=t_fault, since=t_fault - 0.001)


# ---------------------------------------------------------------------------
# Agent scenarios: hbfence in every guest, faults injected, QMP events and the volume asserted.
# ---------------------------------------------------------------------------

def scenario_healthy(ctx: Ctx):
    """3 agents with BMC peers for 3 x lease_timeout: no reset, no fencing, records advance."""
    t = ctx.t
    cl = ctx.agent_cluster(3, with_bmc=True)
    ctx.start_agents(cl)
    dur = 3 * t.lease
    t0 = ctx.timeline.mark("observe", "test", f"{dur:g}s = 3 x lease_timeout")
    seq0 = {vm.cfg.vm_id: ctx.volume.host(vm.cfg.vm_id)["seq"] for vm in cl.vms}
    with ctx.step(f"{dur:g}s (3 x lease_timeout): no RESET/WATCHDOG/SHUTDOWN, every record advancing"):
        time.sleep(dur)
        t1 = time.monotonic()
        ctx.check(not ctx.volume.errors, f"volume reads failed: {ctx.volume.errors[:3]}")
        check_undisturbed(ctx, cl.vms, t0, t1)
        for vm in cl.vms:
            i = vm.cfg.vm_id
            h = ctx.volume.host(i)
            adv = h["seq"] - seq0[i]
            gap = ctx.volume.max_gap(i, t0, t1)
            log(f"  {vm.name}: seq {seq0[i]} -> {h['seq']} (+{adv} in {t1 - t0:.0f}s), longest gap {gap:.1f}s, "
                f"state {h['state']}, caps {','.join(h['capabilities'])}")
            ctx.timings[f"{vm.name} longest record gap"] = gap
            ctx.check(adv >= (t1 - t0) / t.interval / 2,
                      f"{vm.name}: only {adv} writes in {t1 - t0:.0f}s (interval {t.interval:g}s)")
            ctx.check(h["state"] == "active" and "watchdog" in h["capabilities"],
                      f"{vm.name}: record {h['state']} caps {h['capabilities']}")
            ctx.check(not h.get("verdict"), f"{vm.name}: verdict {h.get('verdict')} on a healthy cluster")
            ctx.check(not vm.bmc.requests(), f"{vm.name}: its BMC got requests {vm.bmc.requests()}")
        for vm in cl.vms:
            seen = vm.wait_console(r"SELF-FENCE|event (host_suspect|fence_started|storage_lost)", 0, since=0)
            ctx.check(not seen, f"{vm.name} console: {seen and seen.group(0)}")
        st = ctx.volume.read()
        ctx.check(st["coordinator"] == 1, f"coordinator {st['coordinator']}, expected 1 (lowest id)")
    ctx.print_timeline(t0, "healthy; origin = start of the observation", before=0)


def scenario_storage_stall(ctx: Ctx):
    """vm2's disk stalls: vm2 self-fences (sysrq b, RESET) at lease expiry; vm1, vm3 stay up.

    No BMCs (the coordinator would power vm2 off first). With the disk still stalled the coordinator
    declares vm2 fenced (method watchdog) only after dead_after and after vm2 really reset; after
    the disk resumes, vm2 boots and rejoins with a new incarnation."""
    cl = ctx.agent_cluster(3, with_bmc=False)
    ctx.start_agents(cl)
    vm2 = cl.vm(2)
    _self_fence_scenario(ctx, cl, "disk stall", "vm2's disk stalls (block_set_io_throttle)", vm2.stall_disk,
                         hold=lambda ev: None, hold_what="disk still stalled", release=vm2.resume_disk)


def _self_fence_scenario(ctx: Ctx, cl: hbvm.Cluster, fault: str, fault_detail: str, inject, hold,
                         hold_what: str, release):
    """vm2 loses its storage (inject()): it self-fences through sysrq (RESET without WATCHDOG) once
    its lease could have run out; hold(reset_event) keeps the reset vm2 off the volume until the
    coordinator declared it fenced (method watchdog, after dead_after); release() lets it boot and
    rejoin with a new incarnation. vm1 and vm3 stay undisturbed throughout."""
    t = ctx.t
    vm1, vm2, vm3 = cl.vms
    time.sleep(2 * t.interval)   # a few renewals after ready
    inc = ctx.volume.host(2)["incarnation"]
    con = vm2.console_offset()
    with ctx.step(f"{fault_detail} -> vm2 self-fences through sysrq: RESET without WATCHDOG, "
                  "within lease_timeout (+ slack)"):
        t_fault = ctx.timeline.mark("fault", "vm2", fault_detail)
        inject()
        ev = vm2.qmp.wait_event("RESET", timeout=t.lease + 40, since=t_fault)
        ctx.check(ev is not None, f"vm2: no RESET within {t.lease + 40:g}s of the {fault}")
        hold(ev)
        # Lower bound: the fault must not reset the host before its lease could have run out. The
        # last successful write started at most about one interval before the fault (two if the
        # cycle before was slow and skipped one).
        check_bounds(ctx, f"{fault} -> RESET (self-fence)", ev["t"] - t_fault,
                     t.lease - 2 * t.interval - 0.5, t.lease + 8.0)
        # What the peers' dead_after relies on: the host is reset at the latest lease + watchdog
        # after the start of its last successful write (the host sees that record after it started).
        t_last = ctx.volume.last_change(2, ev["t"])   # a drained write lands after
        check_bounds(ctx, "vm2's last record change (host view) -> RESET", ev["t"] - t_last,
                     0.0, t.lease + t.watchdog)
        wd = qmp_events(vm2, ("WATCHDOG",), t_fault)
        ctx.check(not wd, f"vm2: WATCHDOG {wd} - the watchdog, not the self-fence, reset it")
        m = vm2.wait_console(r"sysrq: Resetting", 5, since=con)
        ctx.check(m, "vm2 console: no 'sysrq: Resetting' from the kernel (the agent's sysrq b)")
        # the agent logs before it writes 'b'; the line reaches the console unless the reset wins
        m = vm2.wait_console(r"SELF-FENCE \(.*\): writing 'b' to /proc/sysrq-trigger", 2, since=con)
        log(f"  vm2 agent: {m.group(0) if m else 'its SELF-FENCE line did not reach the console before the reset'}")
        t_reset = ev["t"]
    with ctx.step(f"{hold_what}: the coordinator declares vm2 fenced (method watchdog) no "
                  "earlier than dead_after, and after vm2 really reset"):
        tv = ctx.volume.wait(lambda h: h.get(2, {}).get("verdict") == "fenced", t.dead_after + 40)
        ctx.check(tv is not None, f"no fenced verdict for vm2: {ctx.volume.summary()}")
        h = ctx.volume.host(2)
        ctx.check(h["method"] == "watchdog" and h["incarnation"] == inc,
                  f"vm2 verdict {h['verdict']} method {h['method']} incarnation {h['incarnation']} (was {inc})")
        ctx.check(tv > t_reset, "fenced verdict seen before vm2's reset")
        ev = [e for e in guest_events(vm1) if e["event"] == "fenced" and e["host"] == 2]
        ctx.check(ev and ev[0]["method"] == "watchdog", f"vm1's events.jsonl: no `fenced` (watchdog) for vm2: {ev}")
        # The bound runs from the coordinator's first read of vm2's last record. That record can be
        # a write that was stuck in a disk throttle: qemu drains it when the guest resets, so it
        # lands after the reset (seen as progress: the verdict comes later, the safe direction). The
        # host sees a change at most about one interval before or after the coordinator does.
        t_last = ctx.volume.last_change(2, tv)
        ctx.timings[f"{fault} -> verdict fenced (watchdog)"] = tv - t_fault
        check_bounds(ctx, "vm2's last record change (host view) -> verdict fenced", tv - t_last,
                     t.dead_after - t.interval - 1.0, t.dead_after + 10)
    with ctx.step("vm1 and vm3 undisturbed: no RESET/WATCHDOG/SHUTDOWN, records advancing"):
        check_undisturbed(ctx, [vm1, vm3], since=t_fault - 1)
    with ctx.step("vm2 released -> it boots, its agent rejoins with a new incarnation"):
        ctx.timeline.mark("release", "test", "vm2 released")
        release()
        wait_rejoined(ctx, vm2, inc, con)
        ctx.timings["RESET -> vm2 rejoined"] = time.monotonic() - t_reset
        check_undisturbed(ctx, [vm1, vm3], since=t_fault - 1)
    ctx.print_timeline(t_fault, f"{fault} of vm2")


def _watchdog_scenario(ctx: Ctx, signal_cmd: str, what: str, console_evidence: str | None):
    t = ctx.t
    cl = ctx.agent_cluster(3, with_bmc=False)
    vm1, vm2, vm3 = cl.vms
    ctx.start_agents(cl)
    time.sleep(2 * t.interval)
    pid = agent_pid(vm2)
    inc = ctx.volume.host(2)["incarnation"]
    con = vm2.console_offset()
    with ctx.step(f"{what} of vm2's agent -> i6300esb fires (WATCHDOG) after watchdog_timeout, then RESET"):
        t_fault = ctx.timeline.mark("fault", "vm2", f"{what} hbfence (pid {pid})")
        vm2.sh(signal_cmd.format(pid=pid), timeout=20)
        t_sent = time.monotonic()
        ctx.timings["signal command round trip"] = t_sent - t_fault
        ev = vm2.qmp.wait_event("WATCHDOG", timeout=t.watchdog + 40, since=t_fault)
        ctx.check(ev is not None, f"vm2: no WATCHDOG within {t.watchdog + 40:g}s")
        ctx.check(ev["data"].get("action") == "reset", f"WATCHDOG {ev['data']}")
        # the agent pets every T/4 until the signal: the last pet is at most one pet period
        # (+ a late wake-up) before the signal, so the device fires no earlier than T - T/4
        check_bounds(ctx, f"{what} -> WATCHDOG", ev["t"] - t_fault,
                     t.watchdog - t.watchdog / PETS_PER_WATCHDOG - 0.25, t.watchdog + 6.0)
        r = vm2.qmp.wait_event("RESET", timeout=15, since=ev["t"])
        ctx.check(r is not None, "vm2: no RESET after the WATCHDOG")
        early = [e for e in qmp_events(vm2, ("RESET", "SHUTDOWN"), t_fault) if e["t"] < ev["t"]]
        ctx.check(not early, f"vm2: {early} before the WATCHDOG (something else reset it)")
        if console_evidence:
            m = vm2.wait_console(console_evidence, 5, since=con)
            ctx.check(m, f"vm2 console: no kernel line matching {console_evidence!r}")
            log(f"  vm2 kernel: {m.group(0)}")
        sf = vm2.wait_console(r"SELF-FENCE|watchdog disarmed", 0, since=con)
        ctx.check(not sf, f"vm2 console after the fault: {sf and sf.group(0)}")
        t_reset = r["t"]
    with ctx.step("vm1 and vm3 undisturbed; vm2 boots again and its agent rejoins"):
        check_undisturbed(ctx, [vm1, vm3], since=t_fault - 1)
        wait_rejoined(ctx, vm2, inc, con)
        ctx.timings["RESET -> vm2 rejoined"] = time.monotonic() - t_reset
        check_undisturbed(ctx, [vm1, vm3], since=t_fault - 1)
    ctx.print_timeline(t_fault, f"{what} of vm2's agent")


def scenario_agent_hang(ctx: Ctx):
    """SIGSTOP of vm2's agent: the i6300esb fires (WATCHDOG, RESET) after watchdog_timeout."""
    _watchdog_scenario(ctx, "kill -STOP {pid}", "SIGSTOP", None)


def scenario_agent_kill(ctx: Ctx):
    """kill -9 of vm2's agent: no magic close, the i6300esb fires (WATCHDOG, RESET)."""
    _watchdog_scenario(ctx, "kill -9 {pid}", "SIGKILL", r"watchdog\d*: watchdog did not stop!")


def scenario_clean_stop(ctx: Ctx):
    """SIGTERM of vm2's agent: `leaving` on the volume, magic close, no WATCHDOG, never fenced.

    BMC peers configured: the coordinator must not suspect or fence a host that left cleanly."""
    t = ctx.t
    cl = ctx.agent_cluster(3, with_bmc=True)
    vm1, vm2, vm3 = cl.vms
    ctx.start_agents(cl)
    time.sleep(2 * t.interval)
    pid = agent_pid(vm2)
    con = vm2.console_offset()
    with ctx.step("SIGTERM of vm2's agent -> it writes `leaving`, disarms the watchdog and exits"):
        t_fault = ctx.timeline.mark("fault", "vm2", f"SIGTERM hbfence (pid {pid})")
        vm2.sh(f"kill -TERM {pid}", timeout=20)
        m = vm2.wait_console(r"hbfence\[\d+\]: .*exiting", 2 * t.io + 20, since=con)
        ctx.check(m, "vm2: the agent did not log `exiting`")
        ctx.timings["SIGTERM -> agent exited"] = time.monotonic() - t_fault
        ctx.check(vm2.wait_console(r"watchdog disarmed \(magic close\)", 0, since=con),
                  "vm2 console: no 'watchdog disarmed (magic close)'")
        tl = ctx.volume.wait(lambda h: h.get(2, {}).get("state") == "leaving", 20)
        ctx.check(tl is not None, f"vm2 not `leaving` on the volume: {ctx.volume.host(2)}")
        ctx.timings["SIGTERM -> `leaving` on the volume"] = tl - t_fault
        # it logs `exiting`, then flushes its log (up to 1 s) and exits
        rc, out = vm2.sh("for i in $(seq 50); do pidof hbfence >/dev/null || exit 1; usleep 200000; done",
                         timeout=30, check=False)
        ctx.check(rc == 1, f"vm2: the agent still runs 10 s after logging `exiting`")
    wait_s = max(t.watchdog, t.suspect) + 2 * t.interval + 10
    with ctx.step(f"{wait_s:g}s (> watchdog_timeout and suspect_after + margin): no WATCHDOG, vm2 "
                  "not fenced, still `leaving`"):
        time.sleep(max(0.0, t_fault + wait_s - time.monotonic()))
        ev = qmp_events(vm2, BAD_EVENTS, t_fault)
        ctx.check(not ev, f"vm2: {[(e['event'], e['data']) for e in ev]} after a clean stop")
        ctx.check(vm2.alive(), "vm2: qemu is gone")
        h = ctx.volume.host(2)
        ctx.check(h["state"] == "leaving" and not h.get("verdict"),
                  f"vm2 on the volume: {h['state']} verdict {h.get('verdict')}")
        ctx.check(not vm2.bmc.requests(), f"vm2's BMC was asked: {vm2.bmc.requests()}")
        for vm in (vm1, vm3):
            bad = [e for e in guest_events(vm) if e["host"] == 2 and e["event"] != "host_left"
                   and e["event"] in ("host_suspect", "fence_started", "fenced", "fence_failed")]
            ctx.check(not bad, f"{vm.name} judged the leaving vm2: {bad}")
            ctx.check(any(e["host"] == 2 and e["event"] == "host_left" for e in guest_events(vm)),
                      f"{vm.name}: no host_left event for vm2")
        check_undisturbed(ctx, [vm1, vm3], since=t_fault - 1)
    ctx.print_timeline(t_fault, "clean stop of vm2's agent")


def scenario_power_loss(ctx: Ctx):
    """SIGKILL of vm3's qemu: coordinator vm1 fences it through its BMC, verdict fenced (ipmi).

    The BMC reports off (the process is gone) and the verdict is on the volume; then the coordinator
    vm1 dies the same way and vm2 takes over, fences vm1 (ipmi) and keeps vm3's verdict."""
    t = ctx.t
    cl = ctx.agent_cluster(3, with_bmc=True)
    vm1, vm2, vm3 = cl.vms
    ctx.start_agents(cl)
    time.sleep(2 * t.interval)
    inc3 = ctx.volume.host(3)["incarnation"]
    with ctx.step("SIGKILL of vm3's qemu -> vm1 fences it through vm3's BMC: verdict fenced (ipmi)"):
        ctx.check(vm3.bmc.power_status() == "on", "vm3's BMC does not report on")
        t_fault = ctx.timeline.mark("fault", "vm3", "SIGKILL of its qemu process")
        vm3.kill()
        ctx.check(vm3.wait_gone(10), "vm3 qemu still there")
        tv = ctx.volume.wait(lambda h: h.get(3, {}).get("verdict") == "fenced", t.suspect + 60)
        ctx.check(tv is not None, f"no fenced verdict for vm3: {ctx.volume.summary()}")
        h = ctx.volume.host(3)
        ctx.check(h["method"] == "ipmi" and h["incarnation"] == inc3, f"vm3 verdict: {h}")
        check_bounds(ctx, "qemu SIGKILL -> verdict fenced (ipmi)", tv - t_fault,
                     t.suspect - t.interval - 1.5, t.suspect + 30)
        reqs = vm3.bmc.requests()
        for tr, msg in reqs:
            ctx.timeline.add("vm3", "bmc", msg, tr)
        ctx.check(any(m == "set power 0" for _, m in reqs), f"vm3's BMC got no power off: {reqs}")
        ctx.check(all(tr > t_fault for tr, _ in reqs), f"BMC request before the fault: {reqs}")
        ctx.check(vm3.bmc.power_status() == "off", "vm3's BMC does not report off")
        ev = [e for e in guest_events(vm1) if e["event"] == "fenced" and e["host"] == 3]
        ctx.check(ev and ev[0]["method"] == "ipmi", f"vm1's events.jsonl: no `fenced` (ipmi) for vm3: {ev}")
        check_undisturbed(ctx, [vm1, vm2], since=t_fault - 1)
    ctx.print_timeline(t_fault, "power loss of vm3")
    inc1 = ctx.volume.host(1)["incarnation"]
    with ctx.step("SIGKILL of the coordinator vm1's qemu -> vm2 becomes coordinator, fences vm1 "
                  "(ipmi); vm3 stays fenced"):
        t_fault2 = ctx.timeline.mark("fault-2", "vm1", "SIGKILL of its qemu process (the coordinator)")
        vm1.kill()
        ctx.check(vm1.wait_gone(10), "vm1 qemu still there")
        tv = ctx.volume.wait(lambda h: h.get(1, {}).get("verdict") == "fenced", t.suspect + 60)
        ctx.check(tv is not None, f"no fenced verdict for vm1: {ctx.volume.summary()}")
        h1, h3 = ctx.volume.host(1), ctx.volume.host(3)
        ctx.check(h1["method"] == "ipmi" and h1["incarnation"] == inc1, f"vm1 verdict: {h1}")
        ctx.check(h3.get("verdict") == "fenced" and h3["method"] == "ipmi", f"vm3 verdict lost: {h3}")
        ctx.check(ctx.volume.read()["coordinator"] == 2, "vm2 is not the coordinator")
        check_bounds(ctx, "coordinator SIGKILL -> verdict fenced (ipmi) by vm2", tv - t_fault2,
                     t.suspect - t.interval - 1.5, t.suspect + 30)
        for tr, msg in vm1.bmc.requests():
            ctx.timeline.add("vm1", "bmc", msg, tr)
        ctx.check(vm1.bmc.power_status() == "off", "vm1's BMC does not report off")
        check_undisturbed(ctx, [vm2], since=t_fault - 1)
    ctx.print_timeline(t_fault2, "power loss of the coordinator vm1", before=1)


# ---------------------------------------------------------------------------
# Real NFS (issue 13): the volume is a file on the host's nfs-ganesha, mounted `hard` by every
# guest's kernel; the agents also talk on the peer channel (eth1, [network], one cluster key).
# ---------------------------------------------------------------------------

NFS_BLOCK = "ip route add blackhole 10.0.2.2/32"     # the guest's only route to the NFS server


def nfs_cluster(ctx: Ctx, with_bmc: bool, init_extra=(), nfs_relays=False) -> hbvm.Cluster:
    cl = ctx.agent_cluster(3, with_bmc=with_bmc, nfs=True, peer_channel=True, init_extra=init_extra,
                           nfs_relays=nfs_relays)
    ctx.start_agents(cl)
    wait_peer_channel(ctx, cl)
    return cl


def wait_peer_channel(ctx: Ctx, cl: hbvm.Cluster, timeout: float = 30.0):
    """Every agent reports every peer reachable on the peer channel (`hbfence status --json` in
    the guest: its daemon's view)."""
    with ctx.step("peer channel: every agent sees every peer reachable (authenticated answers on eth1)"):
        t0 = time.monotonic()
        for vm in cl.vms:
            others = {o.cfg.vm_id for o in cl.vms if o is not vm}
            view = {}
            while True:
                rc, out = vm.sh("hbfence status --json", timeout=20, check=False)
                try:
                    view = {h["id"]: (h.get("network") or {}) for h in json.loads(out)["hosts"]}
                except (ValueError, KeyError, TypeError):
                    view = {"unparsed": out[-300:]}
                if all(view.get(i, {}).get("reachable") is True for i in others):
                    break
                ctx.check(time.monotonic() - t0 < timeout,
                          f"{vm.name}: peers not all reachable on the channel after {timeout:g}s: {view}")
                time.sleep(1)
        ctx.timings["agents ready -> peer channel up (all)"] = time.monotonic() - t0


def check_agents_healthy(ctx: Ctx, vms):
    """`hbfence status --health` in each guest says OK (running, own lease valid, watchdog armed)."""
    for vm in vms:
        rc, out = vm.sh("hbfence status --health", timeout=20, check=False)
        ctx.check(rc == 0, f"{vm.name}: hbfence status --health rc={rc}: {out.strip()}")


def hold_after_reset(ctx: Ctx, vm: hbvm.VM, reset_ev: dict):
    """Pause vm's vCPUs right after its reset (QMP stop, well before the new boot's agent can
    write): the coordinator then judges the old incarnation on a volume the new one does not touch."""
    vm.qmp.execute("stop")
    ctx.timeline.add(vm.name, "held", f"QMP stop {time.monotonic() - reset_ev['t']:.2f}s after its RESET")


def release_hold(ctx: Ctx, vm: hbvm.VM):
    vm.qmp.execute("cont")
    ctx.timeline.add(vm.name, "released", "QMP cont")


def scenario_nfs_cut(ctx: Ctx):
    """Real NFS: vm2's NFS traffic blocked inside vm2: it self-fences, vm1 declares it fenced.

    The volume is a file on the host's nfs-ganesha, mounted hard by every guest; the agents also
    talk on the peer channel. A blackhole route to 10.0.2.2 in vm2 cuts only vm2's storage. vm2
    resets itself (sysrq b, no WATCHDOG) once its lease ran out; held paused after the reset, the
    coordinator declares it fenced (method watchdog) after dead_after; released, vm2 boots,
    mounts again and rejoins with a new incarnation. No BMCs: they would power vm2 off first."""
    cl = nfs_cluster(ctx, with_bmc=False)
    vm2 = cl.vm(2)
    _self_fence_scenario(ctx, cl, "NFS cut", f"`{NFS_BLOCK}` in vm2", lambda: vm2.sh(NFS_BLOCK, timeout=20),
                         hold=lambda ev: hold_after_reset(ctx, vm2, ev),
                         hold_what="vm2 held after its reset", release=lambda: release_hold(ctx, vm2))


def blip_timing() -> dict:
    """The suite's timing with room for a blip between suspect_after and lease_timeout: a lease
    of at least suspect_after + 8 s, so a blip of suspect_after + 3 s leaves vm2 > 3 s of lease
    (its last write started up to one interval before the blip; NFS recovers in < 1 s)."""
    d = agent_timing()
    d["lease-timeout"] = max(d["lease-timeout"], d["suspect-after"] + 8)
    return d


def scenario_nfs_blip(ctx: Ctx):
    """Real NFS: a blip of vm2's NFS longer than suspect_after, shorter than its lease: not powered off.

    BMC peers and the peer channel: the coordinator vm1 sees vm2 without progress past
    suspect_after but does not power it off (fence_deferred) because vm2 answers on the channel
    that its lease is still valid; vm2 writes again when its NFS comes back and continues:
    no reset, no BMC request, no verdict, same incarnation. Lease = suspect_after + 8 s here.
    Every guest mounts through a relay of its own on the host; vm2's relay holds its traffic for
    the blip (a path that hangs, then delivers: no TCP or RPC back-off in the guest)."""
    ctx.t = t = Timing(blip_timing())
    log(f"  timing of this scenario: {t}")
    blip = t.suspect + 3.0
    cl = nfs_cluster(ctx, with_bmc=True, nfs_relays=True)
    vm1, vm2, vm3 = cl.vms
    time.sleep(2 * t.interval)
    inc = ctx.volume.host(2)["incarnation"]
    con = vm2.console_offset()
    with ctx.step(f"vm2's NFS blocked for {blip:g}s (suspect_after {t.suspect:g}s < blip < lease "
                  f"{t.lease:g}s) -> vm1 defers the power-off (fence_deferred); vm2 writes again"):
        t_fault = ctx.timeline.mark("fault", "vm2", f"its NFS relay stalls for {blip:g}s")
        cl.relays[2].stall()
        time.sleep(blip)
        cl.relays[2].resume()
        t_end = ctx.timeline.mark("blip-end", "vm2", "its NFS relay flows again")
        tw = ctx.volume.wait(lambda h: ctx.volume.changed_since(2, t_end), t.lease)
        ctx.check(tw is not None, f"vm2 did not write again within {t.lease:g}s after the blip: {ctx.volume.host(2)}")
        ctx.timings["blip end -> vm2's next record (host view)"] = tw - t_end
        gap = ctx.volume.max_gap(2, t_fault - 1, tw)
        ctx.timings["vm2 without a record change (host view)"] = gap
        ctx.check(gap > t.suspect, f"vm2's longest gap {gap:.1f}s: not past suspect_after ({t.suspect:g}s): no real blip")
        defer = [e for e in guest_events(vm1) if e["event"] == "fence_deferred" and e["host"] == 2]
        ctx.check(defer, "vm1's events.jsonl: no fence_deferred for vm2 (the coordinator never had to "
                  "hold a power-off, or powered it off)")
        log(f"  vm1: fence_deferred for vm2: {defer[0].get('detail')}")
    settle = t.lease + t.suspect + 2 * t.interval
    with ctx.step(f"{settle:g}s after the blip: vm2 not powered off, not reset, no verdict, same "
                  "incarnation; nobody disturbed"):
        time.sleep(max(0.0, t_end + settle - time.monotonic()))
        ctx.check(not vm2.bmc.requests(), f"vm2's BMC got requests {vm2.bmc.requests()}")
        h = ctx.volume.host(2)
        ctx.check(h["incarnation"] == inc and h["state"] == "active" and not h.get("verdict"),
                  f"vm2 on the volume: {h}")
        sf = vm2.wait_console(r"SELF-FENCE", 0, since=con)
        ctx.check(not sf, "vm2 console: SELF-FENCE")
        check_undisturbed(ctx, cl.vms, since=t_fault - 1)   # vm2 too: its gap stayed < lease
        check_agents_healthy(ctx, cl.vms)
        for vm in cl.vms:
            ctx.check(not vm.bmc.requests(), f"{vm.name}'s BMC got requests {vm.bmc.requests()}")
            bad = [e for e in guest_events(vm) if e["event"] in ("fence_started", "fenced", "self_fence")]
            ctx.check(not bad, f"{vm.name}: {bad}")
    ctx.print_timeline(t_fault, f"{blip:g}s NFS blip of vm2")


OUTAGE_SURVIVAL_FLAG = "--outage-survival"


def outage_survival_init_args(agent: str, n: int):
    """`hbfence init` arguments that turn outage survival on (with the membership listed in the
    header, the majority's base, when init offers --members), or None when init has no
    --outage-survival."""
    r = hbvm.run([agent, "init", "--help"], check=False, capture_output=True)
    if OUTAGE_SURVIVAL_FLAG not in r.stdout:
        return None
    return [OUTAGE_SURVIVAL_FLAG, "on"] + (["--members", f"1-{n}"] if "--members" in r.stdout else [])


def scenario_nfs_outage(ctx: Ctx):
    """Real NFS: the NFS server paused (SIGSTOP) for 4 x lease_timeout: no guest resets, all resume.

    Needs outage survival (`hbfence init --outage-survival on`). Without that option the scenario
    still runs (recording today's behaviour: which guests reset, when) and then FAILS: it never
    passes or skips on an agent without outage survival."""
    t = ctx.t
    survival = outage_survival_init_args(ctx.agent, 3)
    log(f"  hbfence init {' '.join(survival) if survival else OUTAGE_SURVIVAL_FLAG + ': MISSING: recording today'}")
    cl = nfs_cluster(ctx, with_bmc=True, init_extra=survival or [])
    time.sleep(2 * t.interval)
    incs = {vm.cfg.vm_id: ctx.volume.host(vm.cfg.vm_id)["incarnation"] for vm in cl.vms}
    cons = {vm.cfg.vm_id: vm.console_offset() for vm in cl.vms}
    outage = 4 * t.lease
    with ctx.step(f"NFS server paused (SIGSTOP ganesha) for {outage:g}s = 4 x lease_timeout"):
        t_fault = ctx.timeline.mark("fault", "nfs", f"SIGSTOP ganesha.nfsd for {outage:g}s")
        ctx.nfs.pause()
        time.sleep(outage)
        ctx.nfs.resume()
        t_resume = ctx.timeline.mark("resume", "nfs", "SIGCONT ganesha.nfsd")
        for vm in cl.vms:   # the outage was real: nobody's record moved while the server was stopped
            gap = ctx.volume.max_gap(vm.cfg.vm_id, t_fault, t_resume)
            ctx.check(gap > outage - t.lease, f"{vm.name}: longest gap {gap:.1f}s during the outage")
    resets = {}
    settle = t.lease + t.suspect + 4 * t.interval
    with ctx.step(f"after the outage ({settle:g}s): every agent writes again, same incarnation"):
        ok = ctx.volume.wait(lambda h: all(h.get(i, {}).get("incarnation") == incs[i]
                                           and ctx.volume.changed_since(i, t_resume) for i in incs), settle)
        ctx.timings["resume -> every agent's next record (host view)"] = (ok or time.monotonic()) - t_resume
        time.sleep(max(0.0, t_resume + settle - time.monotonic()))
        for vm in cl.vms:
            ev = qmp_events(vm, BAD_EVENTS, t_fault)
            if ev:
                resets[vm.name] = [(e["event"], round(e["t"] - t_fault, 1)) for e in ev]
        if resets or survival is None:
            # Today's behaviour, recorded (BENCHMARKS.md): who reset or was powered off, when.
            for vm in cl.vms:
                for tr, msg in vm.bmc.requests():
                    ctx.timeline.add(vm.name, "bmc", msg, tr)
            log(f"  guests reset/powered off during and after the outage (s since the pause): "
                f"{resets or 'none'}; volume: {ctx.volume.summary()}")
        ctx.check(survival is not None, f"outage survival is not available (`hbfence init` has no "
                  f"{OUTAGE_SURVIVAL_FLAG}): {len(resets)} of {len(cl.vms)} guests reset or were "
                  f"powered off: {resets}")
        ctx.check(not resets, f"guests reset or powered off: {resets}")
        ctx.check(ok is not None, f"not every agent wrote again with its incarnation: {ctx.volume.summary()}")
        for vm in cl.vms:
            i = vm.cfg.vm_id
            h = ctx.volume.host(i)
            ctx.check(h["state"] == "active" and not h.get("verdict"), f"{vm.name} on the volume: {h}")
            ctx.check(not vm.bmc.requests(), f"{vm.name}'s BMC got requests {vm.bmc.requests()}")
            sf = vm.wait_console(r"SELF-FENCE", 0, since=cons[i])
            ctx.check(not sf, f"{vm.name} console: SELF-FENCE")
            ctx.check(vm.alive(), f"{vm.name}: qemu is gone")
        check_agents_healthy(ctx, cl.vms)
    ctx.print_timeline(t_fault, f"NFS server paused for {outage:g}s")


SCENARIOS = {
    "watchdog-smoke": scenario_watchdog_smoke,
    "healthy": scenario_healthy,
    "storage-stall": scenario_storage_stall,
    "agent-hang": scenario_agent_hang,
    "agent-kill": scenario_agent_kill,
    "clean-stop": scenario_clean_stop,
    "power-loss": scenario_power_loss,
    "nfs-cut": scenario_nfs_cut,
    "nfs-blip": scenario_nfs_blip,
    "nfs-outage": scenario_nfs_outage,
}
NEEDS_AGENT = set(SCENARIOS) - {"watchdog-smoke"}


# ---------------------------------------------------------------------------
# The static agent
# ---------------------------------------------------------------------------

def find_cargo() -> str | None:
    c = shutil.which("cargo")
    if c:
        return c
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin" / "cargo"
    return str(home) if home.exists() else None


def build_agent() -> str:
    """HBFENCE_AGENT if set, else a static hbfence built from this work tree (release, explicit
    --target so +crt-static stays away from build scripts and proc macros) in its own target
    directory: HBFENCE_VM_TARGET_DIR, default ${CARGO_TARGET_DIR:-REPO/target}/vm-agent."""
    given = os.environ.get("HBFENCE_AGENT")
    if given:
        if not os.access(given, os.X_OK):
            raise RuntimeError(f"HBFENCE_AGENT={given}: not an executable file")
        log(f"agent: HBFENCE_AGENT={given} (not built)")
        path = given
    else:
        cargo = find_cargo()
        if not cargo:
            raise RuntimeError("cargo not found (PATH, $CARGO_HOME/bin): cannot build the agent")
        tdir = os.environ.get("HBFENCE_VM_TARGET_DIR") or str(
            Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target") / "vm-agent")
        env = dict(os.environ, CARGO_TARGET_DIR=tdir, RUSTFLAGS="-C target-feature=+crt-static")
        env.pop("CARGO_BUILD_TARGET", None)
        cmd = [cargo, "build", "--release", "--target", GUEST_TARGET, "--bin", "hbfence"]
        log(f"agent: RUSTFLAGS='-C target-feature=+crt-static' {' '.join(cmd[1:])} (CARGO_TARGET_DIR={tdir})")
        t0 = time.monotonic()
        r = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True)
        if r.returncode != 0:
            raise RuntimeError(f"building the static agent failed (rc={r.returncode}):\n{r.stderr[-4000:]}")
        path = str(Path(tdir) / GUEST_TARGET / "release" / "hbfence")
        log(f"agent: built {path} in {time.monotonic() - t0:.1f}s")
    if not hbvm._is_static(path):
        raise RuntimeError(f"{path} is not statically linked (the guests have no libc)")
    v = hbvm.run([path, "--version"], capture_output=True, check=False).stdout.strip()
    log(f"agent: {v}")
    return path


# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description="hbfence VM tests (qemu TCG)")
    ap.add_argument("scenarios", nargs="*", help=f"default: all ({', '.join(SCENARIOS)})")
    ap.add_argument("--list", action="store_true", help="list scenarios")
    ap.add_argument("--keep", type=int, default=5, help="keep the logs of the last N runs (default 5)")
    args = ap.parse_args()
    if args.list:
        for n, f in SCENARIOS.items():
            print(f"{n:<20} {(f.__doc__ or '').strip().splitlines()[0]}")
        return 0
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {' '.join(unknown)}; known: {' '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    ci = in_ci()

    t_all = time.monotonic()
    hbvm.cleanup()   # install exit/signal handlers before anything starts

    # Without root, missing host tools cannot be installed (and the shared cache may not be
    # writable): skip outside CI, fail in CI.
    msg = None
    if os.geteuid() != 0:
        missing = [c for c in hbvm.HOST_TOOLS if shutil.which(c) is None]
        cache = hbvm.CACHE
        while not cache.exists():
            cache = cache.parent
        if missing:
            msg = f"not root and host tools missing ({' '.join(missing)}): cannot install them"
        elif not os.access(cache, os.W_OK):
            msg = f"not root and {cache} is not writable (set HBFENCE_VM_CACHE)"
    if msg:
        if ci:
            log(f"FAIL  setup: {msg} (CI=true: nothing may be skipped)")
            print(f"0 passed, {len(names)} failed")
            return 1
        log(f"SKIP  all scenarios: {msg}")
        print(f"0 passed, 0 failed, {len(names)} skipped")
        return 0

    root = hbvm.run_root()
    root.mkdir(parents=True, exist_ok=True)
    hbvm.kill_stale(root)
    runs = sorted(root.glob("run-*"))
    for old in runs[:max(0, len(runs) - args.keep + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    run_dir = root / time.strftime("run-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"run directory {run_dir}{' (CI: nothing may be skipped)' if ci else ''}")
    hbvm.start_reaper(run_dir)
    agent = None
    try:
        hbvm.ensure_host_tools()
        kernel = hbvm.ensure_kernel()
        log(f"kernel {kernel.package} {kernel.deb_version}; qemu: "
            f"{hbvm.run([hbvm.QEMU, '--version'], capture_output=True).stdout.splitlines()[0]}")
        if any(n in NEEDS_AGENT for n in names):
            agent = build_agent()
            log(f"agent timing: {Timing(agent_timing())}")
    except Exception as e:
        log(f"FAIL  setup: {e}")
        print(f"0 passed, {len(names)} failed")
        return 1

    results = {}
    for name in names:
        ctx = Ctx(name, run_dir / name, kernel, agent)
        ctx.rundir.mkdir(parents=True)
        log(f"=== scenario {name}: {(SCENARIOS[name].__doc__ or '').strip().splitlines()[0]}")
        t = time.monotonic()
        try:
            SCENARIOS[name](ctx)
            results[name] = "passed"
        except Skip as e:
            if ci:
                results[name] = "failed"
                log(f"scenario {name} FAILED: would be skipped ({e}), but CI=true")
            else:
                results[name] = f"skipped ({e})"
        except Exception as e:
            results[name] = "failed"
            log(f"scenario {name} FAILED: {e}")
            if not isinstance(e, StepFailed):
                traceback.print_exc()
            if ctx.cluster:
                for vm in ctx.cluster.vms:
                    print(f"--- {vm.name} serial.log (tail) ---\n{vm.serial_tail(40)}")
                    tail = vm.qemu_log_tail(5)
                    if tail.strip():
                        print(f"--- {vm.name} qemu.log (tail) ---\n{tail}")
                if ctx.nfs:
                    print(f"--- nfs-ganesha log (tail) ---\n{ctx.nfs.log_tail(15)}")
                if ctx.volume and ctx.volume.hosts:
                    print(f"--- volume: {ctx.volume.summary()}")
                print("--- timeline (seconds since the scenario's first entry) ---")
                ctx.timeline.print()
        finally:
            if ctx.volume:
                ctx.volume.stop()
            if ctx.cluster:
                ctx.cluster.shutdown()
            if ctx.nfs:
                ctx.nfs.stop()
        ctx.timings["scenario total"] = time.monotonic() - t
        log(f"=== {name}: {results[name]}")
        for k, v in ctx.timings.items():
            print(f"    timing  {k:<56} {v:7.2f}s")
    log(f"all done in {time.monotonic() - t_all:.1f}s; logs in {run_dir}")
    passed = sum(1 for r in results.values() if r == "passed")
    failed = sum(1 for r in results.values() if r == "failed")
    skipped = len(results) - passed - failed
    for n, r in results.items():
        print(f"  {n:<20} {r}")
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
