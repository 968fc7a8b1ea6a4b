//! Process-level tests of the agent (`hbfence run`): heartbeat, own lease, watchdog double,
//! self-fencing, clean stop, S3 across restarts, quorum of volumes, host-id collision. The
//! volumes live on the FUSE fault injector so storage can freeze, slow down or fail.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/faultfs.rs"]
mod faultfs;

use cluster::*;
use faultfs::{Fault, FaultFs};
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Bed {
    fs: FaultFs,
    base: PathBuf,
    hosts: Vec<Host>,
    /// Last: removed after the agents, BMCs and mounts that use it have stopped.
    _tmp: tempfile::TempDir,
}

impl Bed {
    /// `n` hosts, `volumes` volume files on one FUSE mount.
    fn new(n: u32, volumes: usize) -> Bed {
        let tmp = tempfile::tempdir().unwrap();
        let backing = tmp.path().join("backing");
        std::fs::create_dir_all(&backing).unwrap();
        let fs = FaultFs::mount(&backing, &tmp.path().join("mnt")).expect("mount faultfs");
        let paths: Vec<PathBuf> =
            (0..volumes).map(|i| fs.mountpoint().join(format!("v{i}.vol"))).collect();
        init_volume(&paths[0], &[]);
        for p in &paths[1..] {
            // Every volume of a host must be of one cluster: copy the first one's header.
            std::fs::copy(backing.join("v0.vol"), backing.join(p.file_name().unwrap())).unwrap();
        }
        let base = tmp.path().to_path_buf();
        let hosts = (1..=n)
            .map(|id| {
                Host::new(
                    &base,
                    &HostSpec {
                        id,
                        volumes: paths.clone(),
                        peers: vec![],
                        hooks_dir: None,
                        eligible: true,
                    },
                )
            })
            .collect();
        Bed { _tmp: tmp, fs, base, hosts }
    }
    fn volume(&self, i: usize) -> PathBuf {
        self.fs.mountpoint().join(format!("v{i}.vol"))
    }
    fn start_all(&mut self) {
        for h in &mut self.hosts {
            h.start();
        }
    }
    /// Waits until every host's watchdog got keepalives (READY).
    fn wait_ready(&self) {
        for h in &self.hosts {
            h.wait_armed();
        }
    }
}

#[test]
fn three_agents_advance_and_status_shows_them() {
    if !require_root("three_agents_advance_and_status_shows_them") {
        return;
    }
    let mut bed = Bed::new(3, 1);
    bed.start_all();
    bed.wait_ready();
    let v = bed.volume(0);
    let first = dump(&v);
    std::thread::sleep(Duration::from_millis(3200));
    let second = dump(&v);
    for id in 1..=3 {
        // The first pet can precede the landing of the first `active` record by a few ms.
        let (s1, _) = host_record(&first, id).expect("record");
        let (s2, state) = host_record(&second, id).expect("record");
        assert_eq!(state, "active");
        // Interval 1 s: about three writes in 3.2 s.
        assert!(s2 >= s1 + 2, "host {id} seq {s1} -> {s2} in 3.2 s");
    }
    let out = hbfence(&["status", "--volume", v.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    for id in 1..=3 {
        assert!(text.contains(&format!("host{id}")), "{text}");
    }
    assert_eq!(text.matches("active").count(), 3, "{text}");
    let cfg = bed.hosts[0].cli(&["status"]);
    let text = String::from_utf8_lossy(&cfg.stdout);
    assert!(text.contains("coordinator 1") && text.contains("running"), "{text}");
}

#[test]
fn frozen_storage_self_fences_within_lease_and_stops_petting() {
    if !require_root("frozen_storage_self_fences_within_lease_and_stops_petting") {
        return;
    }
    let mut bed = Bed::new(1, 1);
    bed.start_all();
    bed.wait_ready();
    let frozen_at = Instant::now();
    bed.fs.set_fault("v0.vol", Fault::Freeze);
    let h = &bed.hosts[0];
    assert!(
        wait_until(LEASE + Duration::from_secs(3), || h.sysrq_letters().contains('b')),
        "no self-fence:\n{}",
        h.log_text()
    );
    let took = frozen_at.elapsed();
    println!(
        "freeze -> self-fence: {:.2} s (lease_timeout {} s)",
        took.as_secs_f64(),
        LEASE.as_secs()
    );
    assert!(took <= LEASE + Duration::from_secs(1), "self-fence took {took:?}");
    let pets = h.watchdog.keepalives();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(h.watchdog.keepalives() <= pets + 1, "keepalives continued after the self-fence");
    assert!(h.watchdog.fired().is_some(), "the watchdog double should fire once pets stop");
    bed.fs.clear_fault("v0.vol");
}

#[test]
fn slow_io_below_io_timeout_does_not_self_fence() {
    if !require_root("slow_io_below_io_timeout_does_not_self_fence") {
        return;
    }
    let mut bed = Bed::new(1, 1);
    bed.start_all();
    bed.wait_ready();
    // A cycle is a write and a read: 2 x 400 ms stays below io_timeout (2 s).
    bed.fs.set_fault("v0.vol", Fault::Delay(Duration::from_millis(400)));
    std::thread::sleep(LEASE * 2);
    let h = &bed.hosts[0];
    assert_eq!(h.sysrq_letters(), "", "self-fenced on slow but timely I/O:\n{}", h.log_text());
    assert!(h.watchdog.fired().is_none());
    bed.fs.clear_fault("v0.vol");
}

#[test]
fn eio_shorter_than_lease_is_survived_longer_is_not() {
    if !require_root("eio_shorter_than_lease_is_survived_longer_is_not") {
        return;
    }
    let mut bed = Bed::new(1, 1);
    bed.start_all();
    bed.wait_ready();
    bed.fs.set_fault("v0.vol", Fault::Eio);
    std::thread::sleep(Duration::from_millis(1500));
    bed.fs.clear_fault("v0.vol");
    std::thread::sleep(LEASE);
    let h = &bed.hosts[0];
    assert_eq!(h.sysrq_letters(), "", "self-fenced after a short EIO burst:\n{}", h.log_text());
    bed.fs.set_fault("v0.vol", Fault::Eio);
    let since = Instant::now();
    assert!(
        wait_until(LEASE + Duration::from_secs(3), || h.sysrq_letters().contains('b')),
        "no self-fence on long EIO"
    );
    assert!(since.elapsed() <= LEASE + Duration::from_secs(1));
    assert!(h.log_text().contains("Input/output error"), "the log should name the error");
    bed.fs.clear_fault("v0.vol");
}

#[test]
fn torn_writes_do_not_renew_the_lease() {
    if !require_root("torn_writes_do_not_renew_the_lease") {
        return;
    }
    let mut bed = Bed::new(1, 1);
    bed.start_all();
    bed.wait_ready();
    // Writes "succeed" but only 512 bytes land: the read-back must catch it (S5 on own writes).
    bed.fs.set_fault("v0.vol", Fault::Torn);
    let h = &bed.hosts[0];
    assert!(
        wait_until(LEASE + Duration::from_secs(3), || h.sysrq_letters().contains('b')),
        "torn writes renewed the lease:\n{}",
        h.log_text()
    );
    bed.fs.clear_fault("v0.vol");
}

#[test]
fn kill_stop_and_term_reach_the_watchdog_correctly() {
    if !require_root("kill_stop_and_term_reach_the_watchdog_correctly") {
        return;
    }
    let mut bed = Bed::new(3, 1);
    bed.start_all();
    bed.wait_ready();
    // S3: the armed marker (this boot's id) is there while a watchdog of this boot may run.
    let armed_marker = |h: &Host| h.dir.join("run").join("armed");
    for h in &bed.hosts {
        let text = std::fs::read_to_string(armed_marker(h)).unwrap_or_default();
        assert_eq!(text.trim().len(), 32, "host {}: no armed marker with a boot id", h.id);
    }
    // kill -9: the FIFO closes without the magic character; the timer fires.
    bed.hosts[0].signal(Signal::SIGKILL);
    assert!(wait_until(Duration::from_secs(5), || bed.hosts[0].watchdog.closed().is_some()));
    assert!(!bed.hosts[0].watchdog.magic_close(), "kill -9 must not disarm");
    assert!(wait_until(WATCHDOG + Duration::from_secs(2), || bed.hosts[0]
        .watchdog
        .fired()
        .is_some()));
    // SIGSTOP: no keepalives; the timer fires after watchdog_timeout.
    let stopped_at = Instant::now();
    bed.hosts[1].signal(Signal::SIGSTOP);
    assert!(
        wait_until(WATCHDOG + Duration::from_secs(2), || bed.hosts[1].watchdog.fired().is_some()),
        "SIGSTOP did not fire the watchdog"
    );
    let fired = bed.hosts[1].watchdog.fired().unwrap();
    assert!(
        fired.duration_since(stopped_at) >= WATCHDOG - Duration::from_millis(600),
        "fired too early"
    );
    // SIGTERM: leaving record, magic close, exit 0.
    bed.hosts[2].signal(Signal::SIGTERM);
    let status =
        bed.hosts[2].wait_exit(Duration::from_secs(5)).expect("agent did not exit on SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{}", bed.hosts[2].log_text());
    // The double's reader polls every 20 ms: give it time to read the last byte.
    assert!(
        wait_until(Duration::from_secs(2), || bed.hosts[2].watchdog.closed().is_some()),
        "the agent exited but the FIFO is still open"
    );
    assert!(bed.hosts[2].watchdog.magic_close(), "no magic close on SIGTERM");
    assert!(bed.hosts[2].watchdog.fired().is_none());
    // A magic close removes the armed marker; a kill leaves it for the next agent of the boot.
    assert!(!armed_marker(&bed.hosts[2]).exists(), "armed marker left after a clean stop");
    assert!(armed_marker(&bed.hosts[0]).exists(), "armed marker gone after kill -9");
    let (_, state) = host_record(&dump(&bed.volume(0)), 3).unwrap();
    assert_eq!(state, "leaving");
    bed.hosts[1].signal(Signal::SIGKILL);
}

#[test]
fn restart_after_self_fence_on_same_boot_never_pets() {
    if !require_root("restart_after_self_fence_on_same_boot_never_pets") {
        return;
    }
    let mut bed = Bed::new(1, 1);
    bed.start_all();
    bed.wait_ready();
    bed.fs.set_fault("v0.vol", Fault::Eio);
    assert!(wait_until(LEASE + Duration::from_secs(3), || bed.hosts[0]
        .sysrq_letters()
        .contains('b')));
    bed.fs.clear_fault("v0.vol");
    bed.hosts[0].signal(Signal::SIGKILL);
    bed.hosts[0].wait_exit(Duration::from_secs(5));
    // Same boot, same runtime dir, storage healthy again: the new agent must fence at once.
    std::fs::write(&bed.hosts[0].sysrq, "").unwrap();
    let pets_before = bed.hosts[0].watchdog.keepalives();
    let restarted = Instant::now();
    bed.hosts[0].start();
    assert!(
        wait_until(Duration::from_secs(3), || bed.hosts[0].sysrq_letters().contains('b')),
        "restart did not self-fence:\n{}",
        bed.hosts[0].log_text()
    );
    println!("restart -> self-fence: {:.2} s", restarted.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        bed.hosts[0].watchdog.keepalives(),
        pets_before,
        "a doomed boot petted the watchdog"
    );
}

#[test]
fn three_volumes_survive_one_frozen_not_two() {
    if !require_root("three_volumes_survive_one_frozen_not_two") {
        return;
    }
    let mut bed = Bed::new(1, 3);
    bed.start_all();
    bed.wait_ready();
    bed.fs.set_fault("v1.vol", Fault::Freeze);
    std::thread::sleep(LEASE * 2);
    let h = &bed.hosts[0];
    assert_eq!(h.sysrq_letters(), "", "one frozen volume of three self-fenced:\n{}", h.log_text());
    assert!(h.events_text().contains("storage_degraded"), "no storage_degraded event");
    bed.fs.set_fault("v2.vol", Fault::Freeze);
    assert!(
        wait_until(LEASE + Duration::from_secs(3), || h.sysrq_letters().contains('b')),
        "two frozen volumes of three did not self-fence"
    );
    bed.fs.clear_fault("v1.vol");
    bed.fs.clear_fault("v2.vol");
}

#[test]
fn host_id_collision_is_refused() {
    if !require_root("host_id_collision_is_refused") {
        return;
    }
    let mut bed = Bed::new(1, 1);
    bed.start_all();
    bed.wait_ready();
    // A second host configured with the same id.
    let mut twin = Host::new(
        &bed.base.join("twin"),
        &HostSpec {
            id: 1,
            volumes: vec![bed.volume(0)],
            peers: vec![],
            hooks_dir: None,
            eligible: true,
        },
    );
    twin.start();
    let status = twin.wait_exit(Duration::from_secs(10)).expect("the second agent kept running");
    assert_eq!(status.code(), Some(76), "host id in use: EX_PROTOCOL, never restarted by the unit");
    let log = twin.log_text();
    assert!(log.contains("in use by another writer"), "{log}");
    assert_eq!(twin.watchdog.keepalives(), 0, "the twin armed its watchdog");
    assert_eq!(bed.hosts[0].sysrq_letters(), "");
}

/// COLLISION-DETECT through the daemon's I/O thread (issue 10 item 12): a record of another
/// run written into a running agent's block between its cycles, as a twin with the same id
/// writing at the same cadence leaves it, is noticed by the read before the next write (the
/// I/O thread passes on only records of another run; this run's own are no news). Plain
/// volume file, no root needed.
#[test]
fn a_record_of_another_run_in_the_own_block_stops_a_running_agent() {
    use hbfence::core::format::{decode, encode_heartbeat, Decoded, Geometry, Heartbeat};
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("v.vol");
    init_volume(&volume, &[]);
    let spec = HostSpec {
        id: 1,
        volumes: vec![volume.clone()],
        peers: vec![],
        hooks_dir: None,
        eligible: true,
    };
    let mut h = Host::new(tmp.path(), &spec);
    h.start();
    assert!(
        wait_until(Duration::from_secs(15), || h.watchdog.keepalives() > 0),
        "the agent never armed its watchdog:\n{}",
        h.log_text()
    );
    let at = Geometry { max_hosts: 8 }.heartbeat_block(1) * 4096;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&volume).unwrap();
    let mut block = vec![0u8; 4096];
    file.read_exact_at(&mut block, at).unwrap();
    let Decoded::Heartbeat(own) = decode(&block) else { panic!("no record of host 1") };
    let twin = Heartbeat {
        incarnation: own.incarnation + 1,
        boot_id: [0xEE; 16],
        seq: own.seq + 1000,
        ..own
    };
    file.write_all_at(&encode_heartbeat(&twin).unwrap(), at).unwrap();
    let status = h.wait_exit(Duration::from_secs(10)).expect("the agent did not notice the twin");
    assert_eq!(status.code(), Some(76), "{}", h.log_text());
    assert!(h.log_text().contains("in use by another writer"), "{}", h.log_text());
}

#[test]
fn bad_input_refuses_to_start_with_a_reason() {
    if !require_root("bad_input_refuses_to_start_with_a_reason") {
        return;
    }
    let bed = Bed::new(1, 1);
    let h = &bed.hosts[0];
    let cfg = std::fs::read_to_string(&h.config).unwrap();
    let run = |text: &str| {
        std::fs::write(&h.config, text).unwrap();
        let out = hbfence(&["run", "--config", h.config.to_str().unwrap()]);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    // A watchdog path that is a regular file: a configuration error, never retried (issue 11).
    let (code, err) = run(&cfg.replace(&h.watchdog.path.display().to_string(), "/etc/hostname"));
    assert_eq!(code, Some(78));
    assert!(err.contains("is not a watchdog device"), "{err}");
    // Host id above max_hosts.
    let (code, err) = run(&cfg.replace("id = 1", "id = 9"));
    assert_eq!(code, Some(78));
    assert!(err.contains("above the volume's max_hosts 8"), "{err}");
    // An unknown key.
    let (code, err) = run(&format!("{cfg}\n[daemon2]\nx = 1\n"));
    assert_eq!(code, Some(78));
    assert!(err.contains("daemon2"), "{err}");
    // A header that fails its CRC.
    std::fs::write(&h.config, &cfg).unwrap();
    let backing = bed.base.join("backing/v0.vol");
    let mut bytes = std::fs::read(&backing).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&backing, &bytes).unwrap();
    let (code, err) = run(&cfg);
    assert_eq!(code, Some(78));
    assert!(err.contains("checksum failure"), "{err}");
    // An unreadable config.
    let out = hbfence(&["run", "--config", "/nonexistent/hbfence.toml"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read it"));
}

#[test]
fn run_check_and_sighup_reload() {
    if !require_root("run_check_and_sighup_reload") {
        return;
    }
    let mut bed = Bed::new(1, 1);
    let out = bed.hosts[0].cli(&["run", "--check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (host 1"));
    bed.start_all();
    bed.wait_ready();
    let h = &bed.hosts[0];
    let cfg = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(
        &h.config,
        cfg.replace("hook_timeout = 5", "hook_timeout = 7")
            .replace("eligible = true", "eligible = false"),
    )
    .unwrap();
    h.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(3), || h.log_text().contains("configuration reloaded")),
        "{}",
        h.log_text()
    );
    assert!(
        h.log_text().contains("[coordinator], [events] changed but need a restart"),
        "{}",
        h.log_text()
    );
    // A broken config on reload keeps the running one.
    std::fs::write(&h.config, "[host]\nid = \"x\"\n").unwrap();
    h.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(3), || h.log_text().contains("reload refused")),
        "{}",
        h.log_text()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(bed.hosts[0].exited().is_none(), "the agent died on a bad reload");
}

/// Capabilities of host `id` in a dump, if its block holds a valid record.
fn host_caps(dump: &serde_json::Value, id: u32) -> Option<Vec<String>> {
    dump["hosts"].as_array()?.iter().find(|h| h["id"] == id && h["crc"] == "ok").map(|h| {
        h["capabilities"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c.as_str().map(String::from)).collect())
            .unwrap_or_default()
    })
}

#[test]
fn watchdog_that_stops_on_close_is_never_advertised() {
    if !require_root("watchdog_that_stops_on_close_is_never_advertised") {
        return;
    }
    let mut bed = Bed::new(1, 1);
    // A driver without magic close and nowayout off: closing the device stops its timer.
    bed.hosts[0].watchdog.emulate_driver(false, false);
    bed.start_all();
    let v = bed.volume(0);
    let h = &bed.hosts[0];
    // Every record the agent writes, from its first `active` one over three more writes,
    // must lack the `watchdog` capability.
    let mut active_seq = None;
    let mut seen = Vec::new();
    let done = wait_until(Duration::from_secs(15), || {
        let d = dump(&v);
        let (Some((seq, state)), Some(caps)) = (host_record(&d, 1), host_caps(&d, 1)) else {
            return false;
        };
        if seen.last().is_none_or(|(s, _, _)| *s != seq) {
            seen.push((seq, state.clone(), caps));
        }
        if state == "active" && active_seq.is_none() {
            active_seq = Some(seq);
        }
        active_seq.is_some_and(|a| seq >= a + 3)
    });
    assert!(done, "the agent never ran active for 3 writes: {seen:?}\n{}", h.log_text());
    let advertised: Vec<_> =
        seen.iter().filter(|(_, _, c)| c.iter().any(|x| x == "watchdog")).collect();
    assert!(
        advertised.is_empty(),
        "advertised an armed watchdog: {advertised:?}\n{}",
        h.log_text()
    );
    assert_eq!(h.watchdog.keepalives(), 0, "petted a watchdog that stops on close");
    // Nothing runs after close: no reset can be pending for a restarted agent (S3).
    assert!(!h.dir.join("run").join("armed").exists(), "armed marker for an unguarded device");
    let log = h.log_text();
    assert!(
        log.contains("WITHOUT watchdog protection") && log.contains("no magic close"),
        "the log does not say why: {log}"
    );
    assert!(log.contains("nowayout=1"), "the log does not say what to do: {log}");
    assert_eq!(h.sysrq_letters(), "");
    let out = h.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("watchdog unguarded ("), "{text}");
}

#[test]
fn sighup_removing_a_bmc_ends_its_fencing_job_with_an_event() {
    if !require_root("sighup_removing_a_bmc_ends_its_fencing_job_with_an_event") {
        return;
    }
    let mut bed = Bed::new(0, 1);
    let password = bed.base.join("bmc-pass");
    std::fs::write(&password, "secret\n").unwrap();
    std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    // Nothing answers on this port (and ipmitool may be missing): every attempt fails, so the
    // fencing job of host 2 stays in the core, retried with backoff.
    let bmc = BmcConfig { port: 9, password_file: password };
    for (id, peers) in [(1, vec![(2, Some(&bmc))]), (2, vec![])] {
        let spec = HostSpec {
            id,
            volumes: vec![bed.volume(0)],
            peers,
            hooks_dir: None,
            eligible: id == 1,
        };
        bed.hosts.push(Host::new(&bed.base, &spec));
    }
    bed.start_all();
    bed.wait_ready();
    bed.hosts[1].signal(Signal::SIGKILL);
    let h = &bed.hosts[0];
    assert!(
        wait_until(Duration::from_secs(15), || !h.events_about("fence_started", 2).is_empty()),
        "host 2 was never fenced:\n{}",
        h.log_text()
    );
    let cfg = std::fs::read_to_string(&h.config).unwrap();
    let without_bmc: String =
        cfg.lines().filter(|l| !l.starts_with("bmc = ")).map(|l| format!("{l}\n")).collect();
    assert_ne!(cfg, without_bmc, "the config had no bmc line");
    std::fs::write(&h.config, without_bmc).unwrap();
    h.signal(Signal::SIGHUP);
    let removed = || {
        h.events_about("fence_failed", 2)
            .iter()
            .any(|e| e["detail"].as_str().is_some_and(|d| d.contains("removed by a reload")))
    };
    assert!(
        wait_until(Duration::from_secs(5), removed),
        "no fence_failed \"removed by a reload\":\n{}\n{}",
        h.events_text(),
        h.log_text()
    );
}

/// A damaged header was noticed by no running agent, and the next start of any agent failed
/// with "not an hbfence volume" and a code the unit does not retry. Now: every running agent
/// raises `volume_header_damaged` with the command that restores it, a starting agent says the
/// header is damaged and exits 69 (retried), and the printed command restores the header
/// without touching a host block.
#[test]
fn a_damaged_header_is_reported_by_running_agents_and_restored_by_their_command() {
    use std::os::unix::fs::FileExt;
    if !require_root("a_damaged_header_is_reported_by_running_agents_and_restored_by_their_command")
    {
        return;
    }
    let mut bed = Bed::new(3, 1);
    for h in &mut bed.hosts[..2] {
        h.start();
    }
    for h in &bed.hosts[..2] {
        assert!(wait_until(Duration::from_secs(10), || h.watchdog.keepalives() > 0));
    }
    let backing = bed.base.join("backing/v0.vol");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&backing).unwrap();
    let mut header = [0u8; 4096];
    file.read_exact_at(&mut header, 0).unwrap();
    let mut torn = header;
    torn[100] ^= 0xff;
    file.write_all_at(&torn, 0).unwrap();

    let damaged = |h: &Host| h.events_about("volume_header_damaged", h.id);
    for h in &bed.hosts[..2] {
        assert!(
            wait_until(Duration::from_secs(5), || !damaged(h).is_empty()),
            "host {} did not notice the damaged header:\n{}",
            h.id,
            h.log_text()
        );
    }
    let detail = damaged(&bed.hosts[0])[0]["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("fails its CRC"), "{detail}");

    // A third agent cannot start on it: told why, and with a code the unit retries.
    let third = &mut bed.hosts[2];
    third.start();
    let status = third.wait_exit(Duration::from_secs(10)).expect("third agent still running");
    assert_eq!(status.code(), Some(69), "{}", third.log_text());
    let text = third.log_text();
    assert!(text.contains("header (block 0) is damaged") && text.contains("intact"), "{text}");

    let command = detail.split('`').nth(1).expect("a command in backquotes").to_string();
    assert!(command.starts_with("hbfence restore-header "), "{command}");
    let args: Vec<&str> = command.split(' ').skip(1).collect();
    let out = hbfence(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for h in &bed.hosts[..2] {
        assert!(
            wait_until(Duration::from_secs(5), || {
                !h.events_about("volume_header_restored", h.id).is_empty()
            }),
            "host {} did not see the restored header:\n{}",
            h.id,
            h.log_text()
        );
        assert!(h.sysrq_letters().is_empty(), "host {} self-fenced", h.id);
    }
    let again = hbfence(&args);
    assert!(!again.status.success(), "a valid header must not be restored twice");
    assert!(String::from_utf8_lossy(&again.stderr).contains("holds a valid header"));
    let third = &mut bed.hosts[2];
    third.start();
    assert!(
        wait_until(Duration::from_secs(10), || third.watchdog.keepalives() > 0),
        "the third agent does not start on the restored header:\n{}",
        third.log_text()
    );
}
