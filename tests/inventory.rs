//! Process-level tests of the VM inventory (issue 15): real agents publishing lists from the
//! `command` source (and, in CI, from a real libvirtd), `hbfence vms`, `status --json`, the
//! `vm_duplicate` alarm, a migration that is not one, an overflow, and the `fenced` event with
//! `HBFENCE_VMS` / `HBFENCE_VMS_FILE`.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/script.rs"]
mod script;

use cluster::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const A: &str = "0a0a0a0a-0000-4000-8000-00000000000a";
const B: &str = "0b0b0b0b-0000-4000-8000-00000000000b";
const C: &str = "0c0c0c0c-0000-4000-8000-00000000000c";

fn vms_json(volume: &Path, host: u32) -> Option<Value> {
    let out = hbfence(&["vms", &host.to_string(), "--json", "--volume", volume.to_str().unwrap()]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn uuids(v: &Value) -> Vec<String> {
    let mut u: Vec<String> = v["vms"]
        .as_array()
        .map(|a| a.iter().map(|d| d["uuid"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    u.sort();
    u
}

fn status_file(h: &Host) -> Option<Value> {
    let text = std::fs::read_to_string(h.dir.join("run/status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// A hook that appends the HBFENCE_* environment of every event to `out`.
fn env_hook(dir: &Path, out: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let hook = dir.join("50-record");
    script::write_executable(
        &hook,
        &format!(
            "#!/bin/sh\nenv | grep '^HBFENCE_' >> {}\necho --- >> {}\n",
            out.display(),
            out.display()
        ),
    )
    .unwrap();
}

struct Bed {
    volume: PathBuf,
    hosts: Vec<Host>,
    lists: Vec<PathBuf>,
    /// Last: removed after the agents, BMCs and mounts that use it have stopped.
    _tmp: tempfile::TempDir,
}

/// `n` agents on one volume file; host i prints the lines of `lists[i - 1]` as its inventory.
fn bed(n: u32) -> Bed {
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("v.vol");
    init_volume(&volume, &[]);
    let mut hosts = Vec::new();
    let mut lists = Vec::new();
    for id in 1..=n {
        let peers = (1..=n).filter(|&p| p != id).map(|p| (p, None)).collect();
        let spec =
            HostSpec { id, volumes: vec![volume.clone()], peers, hooks_dir: None, eligible: true };
        let h = Host::new(tmp.path(), &spec);
        let list = h.dir.join("vms.txt");
        std::fs::write(&list, "").unwrap();
        h.set_inventory(&format!(
            "[inventory]\nsource = \"command\"\ncommand = [\"/bin/cat\", \"{}\"]\ntimeout = 2\n\n",
            list.display()
        ));
        hosts.push(h);
        lists.push(list);
    }
    Bed { _tmp: tmp, volume, hosts, lists }
}

#[test]
fn command_inventory_duplicates_migration_overflow_and_the_fenced_event() {
    if !require_root("command_inventory_duplicates_migration_overflow_and_the_fenced_event") {
        return;
    }
    let mut b = bed(2);
    let record = b.hosts[0].dir.join("hook-env.txt");
    env_hook(&b.hosts[0].dir.join("hooks"), &record);
    std::fs::write(&b.lists[0], format!("{A} web\n{C} db\n")).unwrap();
    std::fs::write(&b.lists[1], format!("# B only\n{B} mail\n")).unwrap();
    for h in &mut b.hosts {
        h.start();
    }
    for h in &b.hosts {
        h.wait_armed();
    }
    // Published, and read back by a reader without a daemon.
    let v = &b.volume;
    assert!(
        wait_until(Duration::from_secs(3), || vms_json(v, 1).is_some_and(|j| uuids(&j) == [A, C])),
        "host 1's list never reached the volume: {:?}\n{}",
        vms_json(v, 1),
        b.hosts[0].log_text()
    );
    let one = vms_json(v, 1).unwrap();
    assert_eq!(one["inventory"], "complete");
    assert!(one["age_s"].as_f64().unwrap() < 3.0, "{one}");
    let status = hbfence(&["status", "--volume", v.to_str().unwrap(), "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let host2 = status["hosts"].as_array().unwrap().iter().find(|h| h["id"] == 2).unwrap();
    assert!(wait_until(Duration::from_secs(3), || vms_json(v, 2).is_some_and(|j| uuids(&j) == [B])));
    assert!(host2["vms"].is_object(), "status --json has no vms: {host2}");
    let text = hbfence(&["vms", "1", "--volume", v.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("2 VM(s)") && text.contains(A) && text.contains("web"), "{text}");
    // The daemons see each other's lists too.
    assert!(wait_until(Duration::from_secs(3), || status_file(&b.hosts[1]).is_some_and(|s| {
        s["peers"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["id"] == 1 && uuids(&p["vms"]) == [A, C]))
    })));

    // Host 2 starts A while host 1 runs it: vm_duplicate on both (both run it).
    std::fs::write(&b.lists[1], format!("{B} mail\n{A} web-copy\n")).unwrap();
    for h in &b.hosts {
        assert!(
            wait_until(Duration::from_secs(5), || !h.events_text().is_empty()
                && h.events_text().contains("\"vm_duplicate\"")),
            "host {}: no vm_duplicate:\n{}",
            h.id,
            h.events_text()
        );
    }
    let dup: Value = b.hosts[0]
        .events_text()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "vm_duplicate")
        .unwrap();
    let detail = dup["detail"].as_str().unwrap();
    assert!(
        detail.contains(A)
            && detail.contains("host 1 (host1)")
            && detail.contains("host 2 (host2)"),
        "{detail}"
    );
    assert!(wait_until(Duration::from_secs(3), || status_file(&b.hosts[0])
        .is_some_and(|s| s["vm_duplicates"].as_array().is_some_and(|d| d.len() == 1))));

    // The same domain as the destination of a migration: not a duplicate, the alarm clears.
    std::fs::write(&b.lists[1], format!("{B} mail\n{A} web migrating-in\n")).unwrap();
    for h in &b.hosts {
        assert!(
            wait_until(Duration::from_secs(5), || status_file(h)
                .is_some_and(|s| s["vm_duplicates"].as_array().is_some_and(|d| d.is_empty()))),
            "host {}: the migration is still a duplicate: {:?}",
            h.id,
            status_file(h).map(|s| s["vm_duplicates"].clone())
        );
        assert_eq!(h.events_text().matches("\"vm_duplicate\"").count(), 1, "host {}", h.id);
    }

    // More domains than the list holds: flagged on the volume and an alarm, never silent.
    let many: String =
        (0..250).map(|i| format!("00000000-0000-4000-8000-{i:012x} vm{i}\n")).collect();
    std::fs::write(&b.lists[0], many).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || vms_json(v, 1)
            .is_some_and(|j| j["inventory"] == "overflow")),
        "no overflow flag: {:?}",
        vms_json(v, 1).map(|j| j["inventory"].clone())
    );
    assert_eq!(vms_json(v, 1).unwrap()["vms"].as_array().unwrap().len(), 248);
    assert!(
        wait_until(Duration::from_secs(2), || b.hosts[0]
            .events_text()
            .contains("inventory overflow")),
        "no overflow alarm:\n{}",
        b.hosts[0].events_text()
    );
    std::fs::write(&b.lists[0], format!("{A} web\n{C} db\n")).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || vms_json(v, 1).is_some_and(|j| uuids(&j) == [A, C]))
    );

    // Host 2 dies: its fenced event names the VMs it ran, in the hook's environment and file.
    b.hosts[1].signal(Signal::SIGKILL);
    let h1 = &b.hosts[0];
    assert!(
        wait_until(DEAD_AFTER + Duration::from_secs(10), || !h1
            .events_about("fenced", 2)
            .is_empty()),
        "host 2 never fenced:\n{}",
        h1.log_text()
    );
    let fenced = &h1.events_about("fenced", 2)[0];
    assert_eq!(uuids(&fenced["vms"]), [A, B], "{fenced}");
    let env_has = |k: &str| {
        std::fs::read_to_string(&record).unwrap_or_default().lines().any(|l| l.starts_with(k))
    };
    assert!(wait_until(Duration::from_secs(5), || env_has("HBFENCE_EVENT=fenced")), "hook not run");
    let env = std::fs::read_to_string(&record).unwrap();
    let block = env.split("---").find(|b| b.contains("HBFENCE_EVENT=fenced")).unwrap();
    let var = |k: &str| {
        block.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or("").to_string()
    };
    let vms = var("HBFENCE_VMS");
    let mut listed: Vec<&str> = vms.split(' ').map(str::trim).collect();
    listed.sort();
    assert_eq!(listed, [A, B], "{block}");
    assert_eq!(var("HBFENCE_VMS_INVENTORY"), "complete");
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(var("HBFENCE_VMS_FILE")).unwrap()).unwrap();
    assert_eq!(uuids(&file["vms"]), [A, B]);
    assert_eq!(file["host"], 2);
    let names: Vec<&str> = file["vms"]["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"mail"), "{file}");
    // And from any reader: the fenced host's last list, with its verdict.
    let two = vms_json(v, 2).unwrap();
    assert_eq!(two["verdict"], "fenced");
    assert_eq!(uuids(&two), [A, B]);
    // Its list never counts as alive: host 1 restarting B is no duplicate.
    std::fs::write(&b.lists[0], format!("{A} web\n{C} db\n{B} mail\n")).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || vms_json(v, 1).is_some_and(|j| uuids(&j).len() == 3))
    );
    // (Host 1's duplicate check runs in the step that took its new list, before it wrote it.)
    assert_eq!(h1.events_text().matches("\"vm_duplicate\"").count(), 1, "{}", h1.events_text());
}

/// Skips (false) outside CI with a reason; in CI (CI=true) a missing piece is a failure.
fn require(test: &str, what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    let reason = format!("{test}: needs {what}");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{reason}; CI=true forbids skipping (tests/run-all installs it)");
    }
    eprintln!("skipping {reason}");
    false
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn virsh(args: &[&str]) -> std::process::Output {
    let mut all = vec!["-c", "qemu:///system"];
    all.extend_from_slice(args);
    run("virsh", &all)
}

/// What this test started of libvirt, undone on drop (also when an assertion fails).
struct Libvirt {
    domain: String,
    pid_files: Vec<PathBuf>,
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.domain]);
        for pid_file in &self.pid_files {
            if let Some(pid) =
                std::fs::read_to_string(pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
    }
}

/// The VM suite's kernel and initramfs (tests/vm/hbvm.py builds and caches them).
fn suite_kernel() -> Option<(String, String)> {
    let k = run("python3", &["tests/vm/hbvm.py", "kernel"]);
    // Progress lines come first on stdout; the JSON follows.
    let text = String::from_utf8_lossy(&k.stdout).to_string();
    let k: Value = serde_json::from_str(&text[text.find('{')?..]).ok()?;
    let i = run("python3", &["tests/vm/hbvm.py", "initramfs"]);
    let initrd = String::from_utf8_lossy(&i.stdout).trim().lines().last()?.to_string();
    Some((k["vmlinuz"].as_str()?.to_string(), initrd))
}

/// A real libvirtd: a disk-less TCG domain started on host 1 is in host 1's list within two
/// intervals, gone within two intervals of its destruction, and when host 1 is killed and
/// fenced, host 2's `fenced` event names it.
#[test]
fn a_real_libvirt_domain_is_published_and_named_by_the_fenced_event() {
    let test = "a_real_libvirt_domain_is_published_and_named_by_the_fenced_event";
    let root = nix::unistd::Uid::effective().is_root();
    let tools = ["libvirtd", "virtlogd", "virsh", "qemu-system-x86_64"]
        .iter()
        .all(|t| run("sh", &["-c", &format!("command -v {t}")]).status.success());
    if !require(
        test,
        "root and libvirt (libvirt-daemon-system, libvirt-clients, libvirt-daemon-driver-qemu)",
        root && tools,
    ) {
        return;
    }
    let qemu_conf = std::fs::read_to_string("/etc/libvirt/qemu.conf").unwrap_or_default();
    let as_root =
        |k: &str| qemu_conf.lines().any(|l| l.trim().replace(' ', "") == format!("{k}=\"root\""));
    if !require(test, "user = \"root\" and group = \"root\" in /etc/libvirt/qemu.conf (without them a start takes 48 s here)", as_root("user") && as_root("group")) {
        return;
    }
    let Some((kernel, initrd)) = suite_kernel() else {
        assert!(!require(
            test,
            "the VM suite's kernel and initramfs (python3 tests/vm/hbvm.py kernel)",
            false
        ));
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut lv =
        Libvirt { domain: format!("hbfence-inventory-{}", std::process::id()), pid_files: vec![] };
    // Our own daemons unless libvirtd already answers (then it is not ours to stop).
    if !virsh(&["version"]).status.success() {
        for (daemon, pid_file) in [
            ("virtlogd", tmp.path().join("virtlogd.pid")),
            ("libvirtd", tmp.path().join("libvirtd.pid")),
        ] {
            let out = run(daemon, &["-d", "-p", pid_file.to_str().unwrap()]);
            assert!(out.status.success(), "{daemon}: {}", String::from_utf8_lossy(&out.stderr));
            lv.pid_files.push(pid_file);
        }
        assert!(
            wait_until(Duration::from_secs(60), || virsh(&["version"]).status.success()),
            "libvirtd does not answer"
        );
    }
    let uuid = format!(
        "5eed{:04x}-0000-4000-8000-{:012x}",
        std::process::id() & 0xffff,
        std::process::id()
    );
    let xml = tmp.path().join("domain.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='qemu'><name>{}</name><uuid>{uuid}</uuid><memory unit='MiB'>128</memory><vcpu>1</vcpu>\
<os><type arch='x86_64'>hvm</type><kernel>{kernel}</kernel><initrd>{initrd}</initrd><cmdline>console=ttyS0 panic=0</cmdline></os>\
<cpu mode='custom'><model>qemu64</model></cpu><on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>preserve</on_crash>\
<devices><serial type='file'><source path='{}'/></serial><memballoon model='none'/></devices></domain>",
            lv.domain,
            tmp.path().join("console.log").display()
        ),
    )
    .unwrap();

    let volume = tmp.path().join("v.vol");
    init_volume(&volume, &[]);
    let mut hosts: Vec<Host> = (1..=2)
        .map(|id| {
            let peers = vec![(3 - id, None)];
            Host::new(
                tmp.path(),
                &HostSpec {
                    id,
                    volumes: vec![volume.clone()],
                    peers,
                    hooks_dir: None,
                    eligible: true,
                },
            )
        })
        .collect();
    hosts[0].set_inventory("[inventory]\nsource = \"libvirt\"\n\n");
    for h in &mut hosts {
        h.start();
    }
    for h in &hosts {
        h.wait_armed();
    }
    let listed = |present: bool| {
        vms_json(&volume, 1)
            .is_some_and(|j| j["inventory"] == "complete" && uuids(&j).contains(&uuid) == present)
    };
    assert!(
        wait_until(Duration::from_secs(3), || listed(false)),
        "host 1 publishes no list: {:?}\n{}",
        vms_json(&volume, 1),
        hosts[0].log_text()
    );
    // Two intervals (1 s each) from `virsh create` returning, plus the reader's own time.
    let out = virsh(&["create", xml.to_str().unwrap()]);
    assert!(out.status.success(), "virsh create: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        wait_until(Duration::from_millis(2_300), || listed(true)),
        "the domain is not in host 1's list within two intervals: {:?}",
        vms_json(&volume, 1)
    );
    // libvirt starts qemu paused ("starting up") and then resumes it: running by the next list.
    let state = || {
        vms_json(&volume, 1).and_then(|j| {
            let d = j["vms"].as_array()?.iter().find(|d| d["uuid"] == uuid.as_str())?.clone();
            Some((d["name"].as_str()?.to_string(), d["state"].as_str()?.to_string()))
        })
    };
    assert!(
        wait_until(Duration::from_millis(2_300), || state()
            == Some((lv.domain.clone(), "running".into()))),
        "not running: {:?}",
        state()
    );
    let out = virsh(&["destroy", &lv.domain]);
    assert!(out.status.success(), "virsh destroy: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        wait_until(Duration::from_millis(2_300), || listed(false)),
        "the destroyed domain is still listed: {:?}",
        vms_json(&volume, 1)
    );

    // Running again, host 1 dies: host 2 fences it, and the fenced event names the domain.
    let out = virsh(&["create", xml.to_str().unwrap()]);
    assert!(out.status.success(), "virsh create: {}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_until(Duration::from_millis(2_300), || listed(true)));
    hosts[0].signal(Signal::SIGKILL);
    let h2 = &hosts[1];
    assert!(
        wait_until(DEAD_AFTER + Duration::from_secs(10), || !h2
            .events_about("fenced", 1)
            .is_empty()),
        "host 1 never fenced:\n{}",
        h2.log_text()
    );
    let fenced = &h2.events_about("fenced", 1)[0];
    assert_eq!(uuids(&fenced["vms"]), [uuid.as_str()], "{fenced}");
    assert_eq!(fenced["vms"]["vms"][0]["name"], lv.domain.as_str());
    drop(hosts);
    drop(lv);
}
