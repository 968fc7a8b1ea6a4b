//! Volume I/O on every kind of backing store (ext4 file, tmpfs file, loop devices with 512-byte
//! and 4096-byte sectors) and `init`/`dump`/`status` on bad input.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::{hbfence, init_volume, init_volume_for};
use hbfence::core::format::{self, Decoded, HostState};
use hbfence::volume::{Access, AlignedBuf, Volume};
use std::path::{Path, PathBuf};
use std::process::Command;

fn require_root_loop(test: &str) -> bool {
    let ok = nix::unistd::Uid::effective().is_root() && Path::new("/dev/loop-control").exists();
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: needs root and loop devices; CI=true forbids skipping");
        }
        eprintln!("skipping {test}: needs root and /dev/loop-control");
    }
    ok
}

/// A loop device over a file; detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn new(file: &Path, sector: u32, read_only: bool) -> Loop {
        let mut cmd = Command::new("losetup");
        cmd.args(["--find", "--show", "--direct-io=on", "--sector-size", &sector.to_string()]);
        if read_only {
            cmd.arg("--read-only");
        }
        let out = cmd.arg(file).output().expect("losetup");
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        Loop(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn heartbeat(id: u32, seq: u64, cluster: [u8; 16]) -> format::Heartbeat {
    format::Heartbeat {
        cluster,
        host_id: id,
        incarnation: 77,
        seq,
        wall_ms: 1,
        mono_ms: 2,
        boot_id: [3; 16],
        state: HostState::Active,
        watchdog_timeout_s: 2,
        caps: 0,
        ack_nonce: 0,
        coordinator: 0,
        verdict_gen: 0,
        verdict_author: 0,
        name: format!("h{id}"),
        verdicts: vec![],
        verdicts_in_pages: 0,
        lineage: None,
        inventory: Default::default(),
    }
}

/// init, write every host's block one by one, read them all back in one I/O and one by one.
fn exercise(path: &Path) {
    init_volume(path, &[]);
    let vol = Volume::open(path, Access::ReadWrite).expect("open");
    let header = vol.read_header().expect("header");
    assert_eq!(header.max_hosts, 8);
    let geo = header.geometry();
    let mut buf = AlignedBuf::new(1).unwrap();
    for id in 1..=8 {
        buf.block_mut(0).copy_from_slice(
            &format::encode_heartbeat(&heartbeat(id, id as u64 * 10, header.cluster)).unwrap(),
        );
        vol.write_block(geo.heartbeat_block(id), &buf, 0).expect("write");
    }
    let view = vol.read_view(&header).expect("read all");
    for id in 1..=8 {
        assert_eq!(
            view.record(id).map(|r| r.seq),
            Some(id as u64 * 10),
            "host {id} on {}",
            path.display()
        );
    }
    for id in 1..=8 {
        let mut one = AlignedBuf::new(1).unwrap();
        vol.read_blocks(geo.heartbeat_block(id), &mut one).unwrap();
        assert!(matches!(format::decode(one.block(0)), Decoded::Heartbeat(h) if h.host_id == id));
    }
    let out = hbfence(&["dump", "--volume", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["header"]["max_hosts"], 8);
    assert_eq!(v["hosts"].as_array().unwrap().len(), 8);
    let h3 = &v["hosts"][2];
    assert_eq!(
        (h3["id"].as_u64(), h3["name"].as_str(), h3["seq"].as_u64(), h3["state"].as_str()),
        (Some(3), Some("h3"), Some(30), Some("active"))
    );
    assert!(h3["incarnation"].is_u64() && h3["wall_time"].is_string());
}

#[test]
fn file_on_ext4_or_the_test_filesystem() {
    let dir =
        tempfile::tempdir_in(std::env::var("CARGO_TARGET_TMPDIR").unwrap_or_else(|_| ".".into()))
            .unwrap();
    exercise(&dir.path().join("v.vol"));
}

/// Issue 10 item 9: the driver writes a table about every other host of a 255-host volume
/// (heartbeat block plus verdict pages, pages first) and reads it back whole.
#[test]
fn verdict_pages_round_trip_through_the_volume_driver() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.vol");
    init_volume_for(&path, "255", &[]);
    let vol = Volume::open(&path, Access::ReadWrite).expect("open");
    let header = vol.read_header().expect("header");
    let geo = header.geometry();
    assert_eq!(geo.pages_per_host(), 2);
    let mut r = heartbeat(1, 5, header.cluster);
    r.verdict_gen = 3;
    r.verdict_author = 1;
    r.verdicts = (2..=255)
        .map(|id| format::Verdict {
            host_id: id,
            kind: format::VerdictKind::Fenced,
            method: format::FenceMethodKind::Watchdog,
            incarnation: u64::from(id),
            wall_ms: 1,
            seq: 4,
            changed_gen: 0,
        })
        .collect();
    let mut pages = vol.page_buffer(geo).unwrap().expect("a 255-host volume has pages");
    let mut buf = AlignedBuf::new(1).unwrap();
    buf.block_mut(0).copy_from_slice(&format::encode_heartbeat(&r).unwrap());
    // The heartbeat alone: its table is not offered, not offered in part.
    vol.write_block(geo.heartbeat_block(1), &buf, 0).unwrap();
    let view = vol.read_view(&header).unwrap();
    assert!(!hbfence::core::view::carries_table(view.record(1).unwrap()));
    let (dumped, text) = dumped_verdicts(&path, 1);
    assert_eq!(dumped.len(), format::MAX_VERDICTS, "only the heartbeat's part");
    assert!(text.contains("table incomplete: 132 verdicts belong in the pages, 0 found"), "{text}");
    vol.write_verdict_pages(geo, &r, &mut pages).unwrap();
    let view = vol.read_view(&header).unwrap();
    let read = view.record(1).unwrap();
    assert!(hbfence::core::view::carries_table(read));
    assert_eq!(read.verdicts, r.verdicts);
    // `dump` shows the whole table, pages included.
    let (dumped, text) = dumped_verdicts(&path, 1);
    let want: Vec<u64> = (2..=255).collect();
    assert_eq!(dumped, want);
    assert!(!text.contains("incomplete"), "{text}");
    assert!(text.contains("verdict: host 255 fenced (method watchdog"), "{text}");
}

/// The ids of host `id`'s verdicts in `dump --json` (heartbeat block, then its pages that are
/// `ok`), and the text dump.
fn dumped_verdicts(path: &Path, id: u64) -> (Vec<u64>, String) {
    let out = hbfence(&["dump", "--volume", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let host = v["hosts"].as_array().unwrap().iter().find(|h| h["id"] == id).unwrap().clone();
    let ids = |list: &serde_json::Value| -> Vec<u64> {
        list.as_array().unwrap().iter().map(|v| v["id"].as_u64().unwrap()).collect()
    };
    let mut all = ids(&host["verdicts"]);
    for page in host["verdict_pages"].as_array().into_iter().flatten() {
        if page["crc"] == "ok" {
            all.extend(ids(&page["verdicts"]));
        }
    }
    let out = hbfence(&["dump", "--volume", path.to_str().unwrap()]);
    assert!(out.status.success());
    (all, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Format 3 (membership in the header) refuses a volume of format 1 or 2 and says how to
/// move on.
#[test]
fn a_volume_of_an_older_format_is_refused_with_the_way_out() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.vol");
    init_volume(&path, &[]);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    for version in [1u16, 2] {
        let mut block = [0u8; format::BLOCK_SIZE];
        f.read_exact_at(&mut block, 0).unwrap();
        as_format(&mut block, version);
        f.write_all_at(&block, 0).unwrap();
        let out = hbfence(&["status", "--volume", path.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            text.contains(&format!("format version {version} was written by an older hbfence"))
                && text.contains("hbfence init --force"),
            "{text}"
        );
    }
}

#[test]
fn file_on_tmpfs() {
    if !Path::new("/dev/shm").is_dir() {
        eprintln!("skipping: no /dev/shm");
        return;
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    exercise(&dir.path().join("v.vol"));
}

#[test]
fn loop_devices_with_512_and_4096_byte_sectors() {
    if !require_root_loop("loop_devices_with_512_and_4096_byte_sectors") {
        return;
    }
    for sector in [512u32, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("backing.img");
        std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
        let dev = Loop::new(&file, sector, false);
        let fd = std::fs::File::open(&dev.0).unwrap();
        use std::os::fd::AsFd;
        assert_eq!(hbfence::sys::block_logical_size(fd.as_fd()).unwrap(), sector);
        exercise(&dev.0);
    }
}

#[test]
fn block_device_too_small_and_read_only_are_refused() {
    if !require_root_loop("block_device_too_small_and_read_only_are_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.img");
    std::fs::write(&small, vec![0u8; 8 * 4096]).unwrap();
    let dev = Loop::new(&small, 512, false);
    let out = hbfence(&["init", "--volume", dev.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs") && err.contains("smaller --max-hosts"), "{err}");
    assert!(
        std::fs::read(&small).unwrap().iter().all(|&b| b == 0),
        "a refused init wrote something"
    );
    drop(dev);
    let big = dir.path().join("big.img");
    std::fs::write(&big, vec![0u8; 1 << 20]).unwrap();
    let ro = Loop::new(&big, 512, true);
    let out = hbfence(&["init", "--volume", ro.0.to_str().unwrap(), "--max-hosts", "8"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("read-only") || err.contains("Read-only"), "{err}");
}

fn expect_failure(args: &[&str], needle: &str) {
    let out = hbfence(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: expected {needle:?} in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_volumes_get_clear_errors_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let s = |n: &str| p(n).to_str().unwrap().to_string();

    // A file of another program.
    let text = b"#!/bin/sh\necho not a volume\n".repeat(400);
    let mut other = text.clone();
    other.truncate(4096 * 2);
    std::fs::write(p("other"), &other).unwrap();
    expect_failure(&["init", "--volume", &s("other")], "not an hbfence volume");
    assert_eq!(std::fs::read(p("other")).unwrap(), other, "init wrote into a foreign file");
    expect_failure(&["dump", "--volume", &s("other")], "wrong magic");
    expect_failure(&["status", "--volume", &s("other")], "wrong magic");

    // Random bytes.
    let mut random = vec![0u8; 4096 * 4];
    hbfence::sys::random_bytes(&mut random).unwrap();
    std::fs::write(p("random"), &random).unwrap();
    expect_failure(&["init", "--volume", &s("random")], "not an hbfence volume");
    expect_failure(&["dump", "--volume", &s("random")], "not an hbfence volume");

    // Size not a multiple of 4096.
    std::fs::write(p("odd"), vec![0u8; 5000]).unwrap();
    expect_failure(&["dump", "--volume", &s("odd")], "not a multiple of 4096");
    expect_failure(&["init", "--volume", &s("odd")], "not a multiple of 4096");

    // Truncated volume.
    init_volume(&p("trunc"), &[]);
    let full = std::fs::read(p("trunc")).unwrap();
    std::fs::write(p("trunc"), &full[..4096 * 5]).unwrap();
    expect_failure(&["dump", "--volume", &s("trunc")], "truncated");
    expect_failure(&["status", "--volume", &s("trunc")], "truncated");

    // Corrupt header: checksum failure, non-zero exit.
    init_volume(&p("crc"), &[]);
    let mut bytes = std::fs::read(p("crc")).unwrap();
    bytes[33] ^= 0x01;
    std::fs::write(p("crc"), &bytes).unwrap();
    expect_failure(&["dump", "--volume", &s("crc")], "checksum failure");
    expect_failure(&["status", "--volume", &s("crc")], "checksum failure");

    // A newer format version (with a valid CRC).
    init_volume(&p("newer"), &[]);
    let mut bytes = std::fs::read(p("newer")).unwrap();
    bytes[10] = 9;
    let crc = crc32fast::hash(&bytes[..4092]);
    bytes[4092..4096].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(p("newer"), &bytes).unwrap();
    expect_failure(&["dump", "--volume", &s("newer")], "format version 9 is newer");

    // Missing path, directory, missing parent directory.
    expect_failure(&["dump", "--volume", &s("missing")], "No such file");
    expect_failure(&["dump", "--volume", dir.path().to_str().unwrap()], "is a directory");
    expect_failure(&["init", "--volume", dir.path().to_str().unwrap()], "is a directory");
    expect_failure(&["init", "--volume", &s("nodir/v.vol")], "does not exist");
    assert!(!p("nodir").exists());

    // Out of range parameters write nothing.
    expect_failure(&["init", "--volume", &s("fresh"), "--max-hosts", "2001"], "out of range");
    expect_failure(&["init", "--volume", &s("fresh"), "--max-hosts", "0"], "out of range");
    expect_failure(
        &["init", "--volume", &s("fresh"), "--interval", "5", "--lease-timeout", "12"],
        "lease_timeout >= 2*interval + io_timeout + watchdog_timeout",
    );
    expect_failure(
        &["init", "--volume", &s("fresh"), "--suspect-after", "9"],
        "suspect_after >= 3*interval",
    );
    expect_failure(
        &["init", "--volume", &s("fresh"), "--watchdog-timeout", "1"],
        "watchdog_timeout >= 2 s",
    );
    assert!(!p("fresh").exists(), "a refused init created the file");
}

/// Rewrites `block` as written by format `version` (same prefix, CRC fixed up): the volumes and
/// records an older hbfence left behind.
fn as_format(block: &mut [u8], version: u16) {
    block[10..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&block[..format::BLOCK_SIZE - 4]);
    block[format::BLOCK_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// `init --force` on a volume whose hosts are still writing (their blocks written by format
/// `version`, block 0 too) must refuse and leave block 0 alone; once idle it re-creates it.
fn init_force_refuses_a_live_volume_of_format(version: u16) {
    let dir = tempfile::tempdir().unwrap();
    let v = dir.path().join("v.vol");
    init_volume(&v, &[]);
    let vs = v.to_str().unwrap();
    let out = hbfence(&["init", "--volume", vs]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let vol = Volume::open(&v, Access::ReadWrite).unwrap();
    let header = vol.read_header().unwrap();
    if version != format::FORMAT_VERSION {
        let mut buf = AlignedBuf::new(1).unwrap();
        vol.read_blocks(0, &mut buf).unwrap();
        as_format(buf.block_mut(0), version);
        vol.write_block(0, &buf, 0).unwrap();
    }
    // A "live" host: a writer advancing host 2's block while init --force watches.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = AlignedBuf::new(1).unwrap();
            let mut seq = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seq += 1;
                buf.block_mut(0).copy_from_slice(
                    &format::encode_heartbeat(&heartbeat(2, seq, header.cluster)).unwrap(),
                );
                as_format(buf.block_mut(0), version);
                vol.write_block(2, &buf, 0).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        })
    };
    let before = std::fs::read(&v).unwrap();
    let out = hbfence(&["init", "--volume", vs, "--force"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "format {version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("live volume") && err.contains("host 2"), "format {version}: {err}");
    assert_eq!(std::fs::read(&v).unwrap()[..4096], before[..4096], "header changed");
    // Idle now: --force re-creates it with a new cluster id.
    let out = hbfence(&["init", "--volume", vs, "--force", "--max-hosts", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let h = Volume::open(&v, Access::ReadOnly).unwrap().read_header().unwrap();
    assert_ne!(h.cluster, header.cluster);
    assert_eq!(h.max_hosts, 4);
}

#[test]
fn init_force_refuses_a_live_volume_and_recreates_an_idle_one() {
    init_force_refuses_a_live_volume_of_format(format::FORMAT_VERSION);
}

/// The way out printed for a volume of an older format is `init --force`: it must still see
/// the hosts of that older format writing (their records decode as unsupported, not as
/// heartbeats).
#[test]
fn init_force_watches_the_hosts_of_an_older_format_too() {
    init_force_refuses_a_live_volume_of_format(1);
}

/// `dump` shows the VM list a heartbeat names, from the inventory set it names, and says so
/// when that set does not hold the list whole.
#[test]
fn dump_shows_the_vm_list_a_heartbeat_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inv.vol");
    init_volume(&path, &[]);
    let vol = Volume::open(&path, Access::ReadWrite).expect("open");
    let header = vol.read_header().expect("header");
    let geo = header.geometry();
    // More than one block of the set (62 domains each).
    let domains: Vec<format::Domain> = (1..=70u8)
        .map(|n| format::Domain {
            uuid: [n; 16],
            name: format!("vm-{n:02}"),
            state: format::DomainState::Running,
        })
        .collect();
    let mut r = heartbeat(2, 9, header.cluster);
    let flags = format::inventory_flags::PUBLISHED | format::inventory_flags::SET_1;
    r.inventory = format::InventoryInfo {
        gen: 4,
        count: domains.len() as u16,
        flags,
        age_ms: 10,
        write: Some(Box::new(format::Inventory {
            cluster: header.cluster,
            host_id: 2,
            incarnation: r.incarnation,
            gen: 4,
            flags: 0,
            seen: domains.len() as u16,
            collected_wall_ms: 1,
            domains: domains.clone(),
        })),
    };
    let mut buf = AlignedBuf::new(format::INVENTORY_SET).unwrap();
    vol.write_inventory(geo, &r, &mut buf).unwrap();
    let mut hb = AlignedBuf::new(1).unwrap();
    hb.block_mut(0).copy_from_slice(&format::encode_heartbeat(&r).unwrap());
    vol.write_block(geo.heartbeat_block(2), &hb, 0).unwrap();

    let dumped = |json: bool| {
        let p = path.to_str().unwrap();
        let args: &[&str] =
            if json { &["dump", "--volume", p, "--json"] } else { &["dump", "--volume", p] };
        let out = hbfence(args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let v: serde_json::Value = serde_json::from_str(&dumped(true)).unwrap();
    let host = v["hosts"].as_array().unwrap().iter().find(|h| h["id"] == 2).unwrap().clone();
    let names: Vec<&str> = host["inventory"]["vms"]
        .as_array()
        .expect("the list the heartbeat names")
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    let want: Vec<String> = domains.iter().map(|d| d.name.clone()).collect();
    assert_eq!(names, want);
    let text = dumped(false);
    assert!(text.contains("vms: generation 4 set 1: 70 domain(s)"), "{text}");
    assert!(text.contains(" running vm-70"), "{text}");

    // A torn second block of the set: the list is not shown in part.
    let mut torn = AlignedBuf::new(1).unwrap();
    torn.block_mut(0)[..512].copy_from_slice(&[0xA5; 512]);
    vol.write_block(geo.inventory_set(2, true) + 1, &torn, 0).unwrap();
    let v: serde_json::Value = serde_json::from_str(&dumped(true)).unwrap();
    let host = v["hosts"].as_array().unwrap().iter().find(|h| h["id"] == 2).unwrap().clone();
    assert_eq!(host["inventory"]["vms"], "unreadable");
    let text = dumped(false);
    assert!(text.contains("the set does not hold them whole"), "{text}");
}
