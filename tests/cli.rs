//! Command-line behaviour that needs no cluster: test-watchdog, help texts, exit codes.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::hbfence;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn test_watchdog_tells_usable_busy_and_not_a_watchdog() {
    let out = hbfence(&["test-watchdog", "--device", "/dev/null"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not a watchdog"), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("wd");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = hbfence(&["test-watchdog", "--device", fifo.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("test double") && text(&out).contains("held by: nobody"));

    // A writer holds it: the command names the holder's pid.
    let _reader =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(b"k").unwrap();
    let out = hbfence(&["test-watchdog", "--device", fifo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains(&format!("process {}", std::process::id())), "{}", text(&out));

    let out = hbfence(&["test-watchdog", "--device", "/nonexistent/watchdog"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("modprobe"), "{}", text(&out));
}

#[test]
fn help_answers_the_questions() {
    let out = hbfence(&["--help"]);
    assert!(out.status.success());
    for cmd in ["init", "run", "status", "dump", "fence", "clear", "check", "test-watchdog"] {
        assert!(text(&out).contains(cmd), "--help lacks {cmd}");
    }
    let out = hbfence(&["check", "--help"]);
    let t = text(&out);
    assert!(
        t.contains("FENCED (exit 4)")
            && t.contains("DEAD (exit 3)")
            && t.contains("=====> DEAD <======"),
        "{t}"
    );
    let out = hbfence(&["init", "--help"]);
    assert!(text(&out).contains("--force") && text(&out).contains("live cluster"));
    let out = hbfence(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn commands_without_a_config_say_what_to_do() {
    for args in [
        &["check", "2", "--config", "/nonexistent.toml"][..],
        &["fence", "2", "--config", "/nonexistent.toml"],
        &["status", "--config", "/nonexistent.toml"],
    ] {
        let out = hbfence(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out).contains("cannot read it"), "{args:?}: {}", text(&out));
    }
    // `run --check` exits as `run` would: 78, a configuration error.
    let out = hbfence(&["run", "--check", "--config", "/nonexistent.toml"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out).contains("cannot read it"), "{}", text(&out));
}

#[test]
fn test_watchdog_refuses_a_device_that_stops_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("wd");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = hbfence(&["test-watchdog", "--device", fifo.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("after close: keeps running"), "{}", text(&out));
    // The test-only sidecar emulates a driver without magic close, nowayout off.
    std::fs::write(dir.path().join("wd.test-driver"), "magic_close = false\nnowayout = false\n")
        .unwrap();
    let out = hbfence(&["test-watchdog", "--device", fifo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("after close: STOPS") && t.contains("no magic close"), "{t}");
    assert!(t.contains("not usable for hbfence") && t.contains("nowayout=1"), "{t}");
    assert!(!t.contains("usable: yes"), "{t}");
    // nowayout keeps it running even without magic close.
    std::fs::write(dir.path().join("wd.test-driver"), "magic_close = false\nnowayout = true\n")
        .unwrap();
    let out = hbfence(&["test-watchdog", "--device", fifo.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}

mod readers {
    //! `check` and `status` decide from a read quorum of volumes, on volumes written by hand.
    use super::cluster::{hbfence, init_volume_for};
    use super::text;
    use hbfence::core::format::{self, caps, FenceMethodKind, HostState, Verdict, VerdictKind};
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};

    pub struct Vols {
        pub dir: tempfile::TempDir,
        pub paths: Vec<PathBuf>,
        pub cluster: [u8; 16],
        pub config: PathBuf,
    }

    /// `n` volumes of one cluster (max_hosts 8) and a config of host 3 naming all of them.
    pub fn volumes(n: usize) -> Vols {
        volumes_for(n, "8")
    }

    pub fn volumes_for(n: usize, max_hosts: &str) -> Vols {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..n).map(|i| dir.path().join(format!("v{i}.vol"))).collect();
        init_volume_for(&paths[0], max_hosts, &[]);
        for p in &paths[1..] {
            std::fs::copy(&paths[0], p).unwrap();
        }
        let v =
            hbfence::volume::Volume::open(&paths[0], hbfence::volume::Access::ReadOnly).unwrap();
        let cluster = v.read_header().unwrap().cluster;
        let mut cfg = "[host]\nid = 3\nname = \"host3\"\n\n".to_string();
        for p in &paths {
            cfg += &format!("[[volume]]\npath = \"{}\"\n\n", p.display());
        }
        cfg += &format!(
            "[watchdog]\ndevice = \"{}\"\n\n[daemon]\nruntime_dir = \"{}\"\nsyslog = false\n",
            dir.path().join("wd").display(),
            dir.path().join("run").display()
        );
        let config = dir.path().join("hbfence.toml");
        std::fs::write(&config, cfg).unwrap();
        Vols { dir, paths, cluster, config }
    }

    pub fn record(v: &Vols, id: u32, incarnation: u64, seq: u64) -> format::Heartbeat {
        format::Heartbeat {
            cluster: v.cluster,
            host_id: id,
            incarnation,
            seq,
            wall_ms: 1_700_000_000_000,
            mono_ms: 1,
            boot_id: [id as u8; 16],
            state: HostState::Active,
            watchdog_timeout_s: 2,
            caps: caps::WATCHDOG_ARMED | caps::IO_HEALTHY,
            ack_nonce: 0,
            coordinator: 1,
            verdict_gen: 0,
            verdict_author: 0,
            name: format!("host{id}"),
            verdicts: vec![],
            verdicts_in_pages: 0,
            lineage: None,
            inventory: Default::default(),
        }
    }

    /// Host 1 as coordinator with generation `gen`, holding `verdicts`.
    pub fn coordinator(v: &Vols, seq: u64, gen: u32, verdicts: Vec<Verdict>) -> format::Heartbeat {
        let mut r = record(v, 1, 11, seq);
        r.caps |= caps::COORDINATOR | caps::COORDINATOR_ELIGIBLE;
        r.verdict_gen = gen;
        r.verdict_author = 1;
        r.verdicts = verdicts;
        r
    }

    pub fn fenced(id: u32, incarnation: u64) -> Verdict {
        Verdict {
            host_id: id,
            kind: VerdictKind::Fenced,
            method: FenceMethodKind::Ipmi,
            incarnation,
            wall_ms: 1_700_000_000_000,
            seq: 0,
            changed_gen: 0,
        }
    }

    /// Writes a record into its heartbeat block (block `id`) of a volume file.
    pub fn put(path: &Path, r: &format::Heartbeat) {
        let block = format::encode_heartbeat(r).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(&block[..], u64::from(r.host_id) * 4096).unwrap();
    }

    /// Writes a record whose CRC fails (a torn write).
    pub fn put_torn(path: &Path, r: &format::Heartbeat) {
        let mut block = format::encode_heartbeat(r).unwrap();
        block[200] ^= 0x5a;
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(&block[..], u64::from(r.host_id) * 4096).unwrap();
    }

    pub fn check(v: &Vols, host: &str) -> (Option<i32>, String) {
        let out = hbfence(&["check", host, "--config", v.config.to_str().unwrap()]);
        (out.status.code(), text(&out))
    }

    /// Issue 10 item 9: a table about every other host of a 255-host volume; the verdicts
    /// beyond the heartbeat block are in the coordinator's verdict pages.
    #[test]
    fn check_and_status_read_verdicts_from_verdict_pages() {
        let v = volumes_for(1, "255");
        let geo = format::Geometry { max_hosts: 255 };
        let verdicts: Vec<Verdict> = (2..=255).map(|id| fenced(id, 1000 + u64::from(id))).collect();
        let table = coordinator(&v, 40, 3, verdicts);
        put(&v.paths[0], &record(&v, 250, 1250, 9));
        let pages = format::encode_verdict_pages(&table);
        assert_eq!(pages.len(), 2);
        let f = std::fs::OpenOptions::new().write(true).open(&v.paths[0]).unwrap();
        for (i, page) in pages.iter().enumerate() {
            f.write_all_at(&page[..], geo.page_block(1, i as u64) * 4096).unwrap();
        }
        put(&v.paths[0], &table);
        let (code, out) = check(&v, "250");
        assert_eq!(code, Some(4), "{out}");
        let out = hbfence(&["status", "--volume", v.paths[0].to_str().unwrap(), "--json"]);
        let j: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
        let h250 = j["hosts"].as_array().unwrap().iter().find(|h| h["id"] == 250).expect("250");
        assert_eq!(h250["verdict"], "fenced", "{j}");

        // The last page torn: the table is not offered in part (no verdict, not "withdrawn").
        let mut torn = pages[1];
        torn[300] ^= 0x5a;
        f.write_all_at(&torn[..], geo.page_block(1, 1) * 4096).unwrap();
        let (code, out) = check(&v, "250");
        assert_ne!(code, Some(4), "{out}");
    }

    #[test]
    fn check_and_status_show_fenced_when_the_fenced_hosts_block_is_torn_for_good() {
        let v = volumes(1);
        put(&v.paths[0], &coordinator(&v, 40, 3, vec![fenced(2, 22)]));
        put_torn(&v.paths[0], &record(&v, 2, 22, 9));
        let (code, out) = check(&v, "2");
        assert_eq!(code, Some(4), "{out}");
        assert!(out.contains("FENCED"), "{out}");
        let out = hbfence(&["status", "--volume", v.paths[0].to_str().unwrap(), "--json"]);
        let j: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
        let h2 = j["hosts"].as_array().unwrap().iter().find(|h| h["id"] == 2).expect("no row 2");
        assert_eq!(h2["verdict"], "fenced", "{j}");
        let out = hbfence(&["status", "--config", v.config.to_str().unwrap()]);
        let t = text(&out);
        assert!(t.lines().any(|l| l.trim_start().starts_with("2 ") && l.contains("fenced")), "{t}");
    }

    #[test]
    fn check_takes_the_newest_table_of_a_quorum_not_the_first_volume() {
        let v = volumes(3);
        for p in &v.paths {
            put(p, &record(&v, 2, 22, 9));
        }
        // v0: the coordinator's block torn in this read; v1 lags (generation 8, no verdict
        // yet); v2 holds generation 10 with the verdict.
        put_torn(&v.paths[0], &coordinator(&v, 52, 10, vec![fenced(2, 22)]));
        put(&v.paths[1], &coordinator(&v, 50, 8, vec![]));
        put(&v.paths[2], &coordinator(&v, 52, 10, vec![fenced(2, 22)]));
        let (code, out) = check(&v, "2");
        assert_eq!(code, Some(4), "{out}");
        // The same with the lagging volume first.
        put(&v.paths[0], &coordinator(&v, 50, 8, vec![]));
        let (code, out) = check(&v, "2");
        assert_eq!(code, Some(4), "{out}");
    }

    #[test]
    fn check_uses_the_newest_record_across_volumes() {
        let v = volumes(2);
        for p in &v.paths {
            put(p, &coordinator(&v, 50, 8, vec![fenced(2, 22)]));
        }
        // Host 2 came back with a new incarnation; v0 still shows the fenced one.
        put(&v.paths[0], &record(&v, 2, 22, 9));
        put(&v.paths[1], &record(&v, 2, 33, 14));
        let (code, out) = check(&v, "2");
        assert_ne!(code, Some(4), "a rejoined host reported fenced: {out}");
        assert!(!out.contains("FENCED"), "{out}");
    }

    #[test]
    fn check_refuses_without_a_read_quorum() {
        let v = volumes(3);
        put(&v.paths[0], &coordinator(&v, 50, 8, vec![fenced(2, 22)]));
        put(&v.paths[0], &record(&v, 2, 22, 9));
        std::fs::remove_file(&v.paths[1]).unwrap();
        std::fs::remove_file(&v.paths[2]).unwrap();
        let (code, out) = check(&v, "2");
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("1 of 3") && out.contains("read quorum of 2"), "{out}");
        let _ = &v.dir;
    }

    fn verdict(id: u32, kind: VerdictKind, incarnation: u64) -> Verdict {
        Verdict { kind, method: FenceMethodKind::None, ..fenced(id, incarnation) }
    }

    /// (command, target incarnation) of host `id`'s mailbox on a volume, if it holds one.
    fn mailbox(path: &Path, id: u32) -> Option<(String, u64)> {
        let out = hbfence(&["dump", "--volume", path.to_str().unwrap(), "--json"]);
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let m = j["mailboxes"].as_array()?.iter().find(|m| m["id"] == id && m["crc"] == "ok")?;
        Some((m["command"].as_str()?.to_string(), m["target_incarnation"].as_u64()?))
    }

    fn fence(v: &Vols, args: &[&str]) -> (Option<i32>, String) {
        let mut all = vec!["fence"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", v.config.to_str().unwrap()]);
        let out = hbfence(&all);
        (out.status.code(), text(&out))
    }

    #[test]
    fn confirm_off_is_refused_unless_the_coordinator_holds_the_host_suspect() {
        let v = volumes(1);
        put(&v.paths[0], &coordinator(&v, 40, 3, vec![]));
        put(&v.paths[0], &record(&v, 2, 22, 9));
        let (code, out) = fence(&v, &["2", "--confirm-off", "--no-wait"]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("not suspect"), "{out}");
        assert_eq!(mailbox(&v.paths[0], 2), None, "a refused confirm-off wrote the mailbox");
        // A verdict about an earlier incarnation does not make the current one suspect.
        put(&v.paths[0], &coordinator(&v, 41, 4, vec![verdict(2, VerdictKind::FenceFailed, 21)]));
        let (code, out) = fence(&v, &["2", "--confirm-off", "--no-wait"]);
        assert_eq!(code, Some(1), "{out}");
        assert_eq!(mailbox(&v.paths[0], 2), None);
        // Already fenced: nothing to confirm.
        put(&v.paths[0], &coordinator(&v, 42, 5, vec![fenced(2, 22)]));
        let (code, out) = fence(&v, &["2", "--confirm-off", "--no-wait"]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("already fenced"), "{out}");
        for kind in [VerdictKind::FenceFailed, VerdictKind::Fencing] {
            put(&v.paths[0], &coordinator(&v, 43, 6, vec![verdict(2, kind, 22)]));
            let (code, out) = fence(&v, &["2", "--confirm-off", "--no-wait"]);
            assert_eq!(code, Some(0), "{out}");
            assert_eq!(mailbox(&v.paths[0], 2), Some(("confirm-off".into(), 22)));
        }
    }

    /// Soak seed 1640719: `clear` names the verdict table generation it read, and a `fenced`
    /// verdict reached after that read (a power-off confirmed while the command ran) is not
    /// one it ends: it says so at once instead of waiting and blaming the coordinator.
    #[test]
    fn clear_names_the_verdicts_it_saw_and_reports_a_fenced_verdict_reached_after_it() {
        let v = volumes(1);
        put(&v.paths[0], &record(&v, 2, 22, 9));
        put(&v.paths[0], &coordinator(&v, 40, 3, vec![verdict(2, VerdictKind::Fencing, 22)]));
        let child = std::process::Command::new(super::cluster::BIN)
            .args(["clear", "2", "--config", v.config.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let seen = || {
            let out = hbfence(&["dump", "--volume", v.paths[0].to_str().unwrap(), "--json"]);
            let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let m = j["mailboxes"].as_array()?.iter().find(|m| m["id"] == 2)?.clone();
            Some((m["command"].as_str()?.to_string(), m["seen_verdict_gen"].as_u64()?))
        };
        assert!(
            super::cluster::wait_until(std::time::Duration::from_secs(20), || seen().is_some()),
            "no clear written"
        );
        assert_eq!(seen(), Some(("clear".into(), 3)));
        // The coordinator confirms the power-off before it reads the clear.
        let stamped = Verdict { changed_gen: 4, ..fenced(2, 22) };
        put(&v.paths[0], &coordinator(&v, 41, 4, vec![stamped]));
        let out = child.wait_with_output().unwrap();
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(all.contains("confirmed FENCED") && all.contains("generation 3"), "{all}");
        assert!(!all.contains("is an eligible hbfence running"), "{all}");
    }

    /// A `clear` is done when the table without the verdict is on a write quorum of volumes:
    /// on one volume of three, a reader of the other two (a read quorum) still shows the
    /// verdict, and the coordinator may die before it republishes the table elsewhere.
    #[test]
    fn clear_is_done_only_when_the_withdrawal_is_on_a_write_quorum() {
        let v = volumes(3);
        let spawn_clear = || {
            std::process::Command::new(super::cluster::BIN)
                .args(["clear", "2", "--config", v.config.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let written = |path: &Path| {
            super::cluster::wait_until(std::time::Duration::from_secs(20), || {
                mailbox(path, 2).is_some_and(|(c, _)| c == "clear")
            })
        };
        let with_verdict = coordinator(&v, 40, 3, vec![verdict(2, VerdictKind::Fencing, 22)]);
        for path in &v.paths {
            put(path, &record(&v, 2, 22, 9));
            put(path, &with_verdict);
        }
        // The withdrawal reaches volume 0 only: not done.
        let child = spawn_clear();
        assert!(written(&v.paths[0]), "no clear written");
        put(&v.paths[0], &coordinator(&v, 41, 4, vec![]));
        let out = child.wait_with_output().unwrap();
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{all}");
        assert!(all.contains("reached only 1 of 3 volumes"), "{all}");
        // It reaches volumes 0 and 1: done.
        for path in &v.paths {
            put(path, &with_verdict);
        }
        let child = spawn_clear();
        assert!(written(&v.paths[1]), "no clear written");
        put(&v.paths[0], &coordinator(&v, 41, 4, vec![]));
        std::thread::sleep(std::time::Duration::from_millis(500));
        put(&v.paths[1], &coordinator(&v, 42, 4, vec![]));
        let out = child.wait_with_output().unwrap();
        let all = text(&out);
        assert_eq!(out.status.code(), Some(0), "{all}");
        assert!(all.contains("verdict fencing cleared"), "{all}");
    }

    /// A table's lineage (verdicts6) is shown by `dump`; a table without one shows none.
    #[test]
    fn dump_shows_a_verdict_tables_lineage() {
        let v = volumes(1);
        let mut r = coordinator(&v, 40, 9, vec![fenced(2, 22)]);
        r.lineage = Some(format::Lineage { base_gen: 6, first_gen: 8, author_incarnation: 11 });
        put(&v.paths[0], &r);
        put(&v.paths[0], &record(&v, 2, 22, 9));
        let dump = |json: bool| {
            let mut args = vec!["dump", "--volume", v.paths[0].to_str().unwrap()];
            if json {
                args.push("--json");
            }
            hbfence(&args)
        };
        let j: serde_json::Value = serde_json::from_slice(&dump(true).stdout).unwrap();
        let hosts = j["hosts"].as_array().expect("hosts");
        let host = |id: u32| hosts.iter().find(|h| h["id"] == id).expect("a host").clone();
        assert_eq!(
            host(1)["lineage"],
            serde_json::json!({"base_gen": 6, "first_gen": 8, "author_incarnation": 11})
        );
        assert_eq!(host(2)["lineage"], serde_json::Value::Null);
        let out = text(&dump(false));
        assert!(
            out.contains("took in up to generation 6, its author's tenure from 8 (run 11)"),
            "{out}"
        );
    }

    #[test]
    fn fence_never_writes_any_incarnation_because_a_block_is_torn() {
        let v = volumes(1);
        put(&v.paths[0], &coordinator(&v, 40, 3, vec![]));
        put_torn(&v.paths[0], &record(&v, 2, 22, 9));
        let (code, out) = fence(&v, &["2", "--no-wait"]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("incarnation cannot be determined"), "{out}");
        assert_eq!(mailbox(&v.paths[0], 2), None, "wrote a request for any incarnation");
        let (code, out) = fence(&v, &["5", "--no-wait"]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("never written"), "{out}");
        assert_eq!(mailbox(&v.paths[0], 5), None);
        // A confirm-off about a host torn for good names the incarnation of the verdict.
        put(&v.paths[0], &coordinator(&v, 41, 4, vec![verdict(2, VerdictKind::FenceFailed, 22)]));
        let (code, out) = fence(&v, &["2", "--confirm-off", "--no-wait"]);
        assert_eq!(code, Some(0), "{out}");
        assert_eq!(mailbox(&v.paths[0], 2), Some(("confirm-off".into(), 22)));
    }

    #[test]
    fn fence_counts_a_new_boot_id_not_a_new_incarnation_as_rejoined() {
        use std::io::BufRead;
        use std::sync::{Arc, Mutex};
        let v = volumes(1);
        put(&v.paths[0], &coordinator(&v, 40, 3, vec![]));
        put(&v.paths[0], &record(&v, 2, 22, 9));
        let mut child = std::process::Command::new(super::cluster::BIN)
            .args(["fence", "2", "--config", v.config.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let (l, out) = (lines.clone(), child.stdout.take().unwrap());
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let has = |what: &str| lines.lock().unwrap().iter().any(|l| l.contains(what));
        let wait = |what: &str| {
            super::cluster::wait_until(std::time::Duration::from_secs(20), || has(what))
        };
        assert!(wait("request written"), "{:?}", lines.lock().unwrap());
        // The agent restarts on the same boot: a new incarnation is no proof of a reset.
        put(&v.paths[0], &record(&v, 2, 33, 10));
        assert!(wait("same boot"), "{:?}", lines.lock().unwrap());
        assert!(!has("FENCED"), "{:?}", lines.lock().unwrap());
        // Now it comes back after a reset: a new boot id.
        let mut rebooted = record(&v, 2, 44, 11);
        rebooted.boot_id = [0xbb; 16];
        put(&v.paths[0], &rebooted);
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let all = lines.lock().unwrap().join("\n");
        assert!(status.success(), "{all}");
        assert!(all.contains("FENCED (rejoined after a reset: new boot id)"), "{all}");
    }
}

mod health {
    //! `status --health`: one line and a Nagios-style exit code, from synthetic status files.
    use super::readers::volumes;
    use super::{hbfence, text};
    use serde_json::json;

    fn status(pid: u32, age_ms: u64, phase: &str, lease_valid: bool, armed: bool) -> String {
        json!({
            "pid": pid,
            "phase": phase,
            "lease_valid": lease_valid,
            "lease_remaining_ms": if lease_valid { 4000 } else { -10 },
            "watchdog_armed": armed,
            "watchdog": if armed { "armed" } else { "not armed" },
            "mono_ms": hbfence::sys::boottime_ms() - age_ms,
        })
        .to_string()
    }

    fn health(config: &std::path::Path) -> (Option<i32>, String) {
        let out = hbfence(&["status", "--health", "--config", config.to_str().unwrap()]);
        (out.status.code(), text(&out))
    }

    #[test]
    fn every_health_code_from_the_status_file() {
        let v = volumes(1);
        let run = v.dir.path().join("run");
        let file = run.join("status.json");
        std::fs::create_dir_all(&run).unwrap();
        let me = std::process::id();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();

        let (code, out) = health(&v.config);
        assert_eq!(code, Some(2), "{out}");
        assert!(out.starts_with("HBFENCE CRITICAL - agent not running (no status file"), "{out}");

        for (body, want, says) in [
            (status(me, 100, "running", true, true), 0, "HBFENCE OK - phase running, lease valid"),
            (status(me, 100, "running", true, false), 1, "HBFENCE WARNING - watchdog not armed"),
            (status(me, 100, "probing", false, false), 1, "HBFENCE WARNING - agent starting"),
            (status(me, 100, "leaving", true, true), 1, "HBFENCE WARNING - agent stopping"),
            (status(me, 100, "running", false, true), 2, "HBFENCE CRITICAL - own lease not valid"),
            (status(me, 100, "self-fencing", false, true), 2, "HBFENCE CRITICAL - agent doomed"),
            (
                status(gone_pid, 100, "running", true, true),
                2,
                "CRITICAL - agent not running (process",
            ),
            (status(me, 60_000, "running", true, true), 2, "CRITICAL - agent (pid"),
            (
                {
                    let mut v: serde_json::Value =
                        serde_json::from_str(&status(me, 100, "running", true, true)).unwrap();
                    v["survival_warning"] = json!("outage survival is on in the volume header, but this host (id 1) has no [network] section");
                    v.to_string()
                },
                1,
                "HBFENCE WARNING - outage survival is on in the volume header, but this host (id 1) has no [network] section: phase running",
            ),
            ("{not json".to_string(), 3, "HBFENCE UNKNOWN - status file"),
        ] {
            std::fs::write(&file, &body).unwrap();
            let (code, out) = health(&v.config);
            assert_eq!(code, Some(want), "{body}: {out}");
            assert!(out.contains(says), "{body}: {out}");
            assert_eq!(out.lines().count(), 1, "{out}");
        }

        let (code, out) = health(&v.dir.path().join("nonexistent.toml"));
        assert_eq!(code, Some(3), "{out}");
        assert!(out.starts_with("HBFENCE UNKNOWN - "), "{out}");

        let out = hbfence(&["status", "--help"]);
        for line in ["0 OK", "1 WARNING", "2 CRITICAL", "3 UNKNOWN"] {
            assert!(text(&out).contains(line), "status --help lacks {line}");
        }
    }
}

#[test]
fn completions_are_generated_from_the_cli_definition() {
    let out = hbfence(&["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out));
    let script = String::from_utf8(out.stdout).unwrap();
    // bash itself completes `hbfence sta` and `hbfence status --he` with the script.
    let complete = |words: &str| {
        let line = format!(
            "{script}\nCOMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _hbfence hbfence \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             echo \"${{COMPREPLY[@]}}\""
        );
        let o = std::process::Command::new("bash").arg("-c").arg(line).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    assert_eq!(complete("hbfence sta"), "status");
    assert_eq!(complete("hbfence status --he"), "--health --help");
    assert!(complete("hbfence t").contains("test-watchdog"));

    let out = hbfence(&["completions", "zsh"]);
    assert!(out.status.success(), "{}", text(&out));
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.starts_with("#compdef hbfence"), "{}", &script[..80.min(script.len())]);
    for cmd in ["init", "run", "status", "dump", "check", "fence", "clear", "test-watchdog"] {
        assert!(script.contains(&format!("'{cmd}:")), "zsh completion lacks {cmd}");
    }
    assert!(script.contains("--health"));
    // A packaging helper: not in the help.
    assert!(!text(&hbfence(&["--help"])).contains("completions"));
}

/// Issue 11: `init` errors name the option to change.
#[test]
fn init_errors_name_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("v.vol");
    let init = |extra: &[&str]| {
        let mut args = vec!["init", "--volume", vol.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = hbfence(&args);
        (out.status.code(), text(&out))
    };
    let (code, t) = init(&["--interval", "-1"]);
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("'--interval <S>'") && t.contains("cannot be negative"), "{t}");
    let (code, t) = init(&["--max-hosts", "-1"]);
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("'--max-hosts <N>'"), "{t}");
    let (code, t) = init(&["--lease-timeout", "4000"]);
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains("lease_timeout is 4000 s, more than one hour")
            && t.contains("change --lease-timeout;"),
        "{t}"
    );
    let (code, t) = init(&["--watchdog-timeout", "3601"]);
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains("watchdog_timeout is 3601 s") && t.contains("change --watchdog-timeout;"),
        "{t}"
    );
    let (code, t) = init(&["--io-timeout", "1"]);
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("change --io-timeout or --interval;"), "{t}");
    assert!(!vol.exists(), "a refused init wrote the volume");
}
