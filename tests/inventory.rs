//! Process-level tests of the VM inventory (issue 15): real agents publishing lists from the
//! `command` source (and, in CI, from a real libvirtd), `hbfence vms`, `status --json`, the
//! `vm_duplicate` alarm, a migration that is not one, an overflow, and the `fenced` event with
//! `HBFENCE_VMS` / `HBFENCE_VMS_FILE`.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
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
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nenv | grep '^HBFENCE_' >> {}\necho --- >> {}\n",
            out.display(),
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct Bed {
    _tmp: tempfile::TempDir,
    volume: PathBuf,
    hosts: Vec<Host>,
    lists: Vec<PathBuf>,
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
        assert!(
            wait_until(Duration::from_secs(10), || h.watchdog.keepalives() > 0),
            "host {} never armed:\n{}",
            h.id,
            h.log_text()
        );
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
