#!/usr/bin/env python3
"""hbfence kernel-level tests in qemu (TCG): the scenarios and their runner. Started by ./run:
    tests/vm/run [--list] [--keep N] [SCENARIO...]

No SCENARIO: all of them. Logs: $HBFENCE_VM_CACHE/runs/<run>/ (default /var/tmp/hbfence-vm).
Environment: HBFENCE_VM_CACHE, HBFENCE_VM_KERNEL_PKG (pin the kernel), HBFENCE_AGENT (static agent
binary put into the initramfs as /usr/sbin/hbfence; scenarios that need it are skipped without it).
See README.md next to this file.
"""

import argparse
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hbvm  # noqa: E402
from hbvm import log  # noqa: E402


class StepFailed(Exception):
    pass


class Skip(Exception):
    pass


class Ctx:
    """What a scenario gets: kernel, initramfs builder, a run directory, steps and a timeline."""

    def __init__(self, name: str, rundir: Path, kernel: hbvm.Kernel):
        self.name = name
        self.rundir = rundir
        self.kernel = kernel
        self.timeline = hbvm.Timeline()
        self.cluster = None
        self.timings = {}

    def initramfs(self, payload=None):
        return hbvm.build_initramfs(self.kernel, payload=payload)

    def make_cluster(self, n=3, **kw) -> hbvm.Cluster:
        self.cluster = hbvm.Cluster(n, self.kernel, kw.pop("initrd", None) or self.initramfs(),
                                    self.rundir, timeline=self.timeline, **kw)
        return self.cluster

    def agent_cluster(self, n=3, timing=None, watchdog_action="reset", coordinators=(1,),
                      with_bmc: bool = True, extra_config: str = "") -> hbvm.Cluster:
        """For the agent scenarios: n VMs running HBFENCE_AGENT (autostarted at boot with a
        generated /etc/hbfence/hbfence.toml, BMC password files), the shared volume initialised on
        the host with `hbfence init`. Skips the scenario when HBFENCE_AGENT is not set.
        with_bmc=False: the peers get no `bmc` in the config (no IPMI fencing), for scenarios that
        must see the watchdog fire: with a BMC the coordinator powers a silent peer off after
        suspect_after, which is shorter than the watchdog timeout in AGENT_TIMING."""
        agent = os.environ.get("HBFENCE_AGENT")
        if not agent:
            raise Skip("HBFENCE_AGENT (a static hbfence binary) not set")
        timing = dict(AGENT_TIMING, **(timing or {}))

        def files(i, cl):
            f = {"/etc/hbfence/hbfence.toml": hbvm.agent_config(
                i, n, cl.bmc_ports if with_bmc else {}, coordinator=i in coordinators, extra=extra_config)}
            for p in cl.bmc_ports:
                if p != i:
                    f[f"/etc/hbfence/bmc/vm{p}"] = hbvm.BMC_PASSWORD + "\n"
            return f

        cl = self.make_cluster(n, initrd=self.initramfs(payload=agent), files_for=files,
                               watchdog_action=watchdog_action)
        args = [agent, "init", "--volume", str(cl.disk), "--max-hosts", str(max(n, 3))]
        for k, v in timing.items():
            args += [f"--{k}", str(v)]
        r = hbvm.run(args, check=False, capture_output=True)
        if r.returncode != 0:
            raise StepFailed(f"{' '.join(args)}: rc={r.returncode}\n{r.stdout}{r.stderr}")
        return cl

    def step(self, title: str):
        return _Step(self, title)

    def check(self, cond, msg: str):
        if not cond:
            raise StepFailed(msg)


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
# Scenarios
# ---------------------------------------------------------------------------

WATCHDOG_T = 5   # busybox watchdog -T (seconds)

# Cluster timing of the agent scenarios (hbfence init options): small, as the brief's test tier says.
AGENT_TIMING = {"interval": 1, "io-timeout": 2, "lease-timeout": 5, "watchdog-timeout": 5,
                "suspect-after": 4}

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


SCENARIOS = {
    "watchdog-smoke": scenario_watchdog_smoke,
}


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

    t_all = time.monotonic()
    hbvm.cleanup()   # install exit/signal handlers before anything starts
    root = hbvm.run_root()
    root.mkdir(parents=True, exist_ok=True)
    hbvm.kill_stale(root)
    runs = sorted(root.glob("run-*"))
    for old in runs[:max(0, len(runs) - args.keep + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    run_dir = root / time.strftime("run-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"run directory {run_dir}")
    hbvm.start_reaper(run_dir)
    try:
        hbvm.ensure_host_tools()
        kernel = hbvm.ensure_kernel()
        log(f"kernel {kernel.package} {kernel.deb_version}; qemu: "
            f"{hbvm.run([hbvm.QEMU, '--version'], capture_output=True).stdout.splitlines()[0]}")
    except Exception as e:
        log(f"FAIL  setup: {e}")
        print("0 passed, 1 failed")
        return 1

    results = {}
    for name in names:
        ctx = Ctx(name, run_dir / name, kernel)
        ctx.rundir.mkdir(parents=True)
        log(f"=== scenario {name}")
        t = time.monotonic()
        try:
            SCENARIOS[name](ctx)
            results[name] = "passed"
        except Skip as e:
            results[name] = f"skipped ({e})"
        except Exception as e:
            results[name] = "failed"
            log(f"scenario {name} FAILED: {e}")
            if not isinstance(e, StepFailed):
                traceback.print_exc()
            if ctx.cluster:
                for vm in ctx.cluster.vms:
                    print(f"--- {vm.name} serial.log (tail) ---\n{vm.serial_tail(25)}")
                    tail = vm.qemu_log_tail(5)
                    if tail.strip():
                        print(f"--- {vm.name} qemu.log (tail) ---\n{tail}")
                print("--- timeline ---")
                ctx.timeline.print()
        finally:
            if ctx.cluster:
                ctx.cluster.shutdown()
        ctx.timings["scenario total"] = time.monotonic() - t
        log(f"=== {name}: {results[name]}")
        for k, v in ctx.timings.items():
            print(f"    timing  {k:<48} {v:6.1f}s")
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
