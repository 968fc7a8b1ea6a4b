//! Process-level tests of what the agent reports to the outside (S7: nothing of it may hold up
//! the petting thread): sd_notify to a socket nobody reads, stderr logging under systemd, the
//! Prometheus textfile. The volume is a plain file (O_DIRECT on the test's file system); the
//! watchdog is the FIFO double of `support/cluster.rs`, sysrq a test file.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::*;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Bed {
    volume: PathBuf,
    hosts: Vec<Host>,
    /// Last: removed after the agents, BMCs and mounts that use it have stopped.
    tmp: tempfile::TempDir,
}

impl Bed {
    fn new(n: u32) -> Bed {
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("v.vol");
        init_volume(&volume, &[]);
        let hosts = (1..=n)
            .map(|id| {
                Host::new(
                    tmp.path(),
                    &HostSpec {
                        id,
                        volumes: vec![volume.clone()],
                        peers: vec![],
                        hooks_dir: None,
                        eligible: true,
                    },
                )
            })
            .collect();
        Bed { tmp, volume, hosts }
    }
}

fn own_seq(volume: &Path, id: u32) -> u64 {
    host_record(&dump(volume), id).map_or(0, |(s, _)| s)
}

/// With the old code, the STATUS datagram sent every cycle from the petting thread blocked as
/// soon as the socket's queue was full (net.unix.max_dgram_qlen datagrams): pets stopped and
/// the watchdog double fired. Now nothing the agent tells systemd can hold up a pet.
#[test]
fn notify_socket_nobody_reads_never_stops_pets_or_heartbeats() {
    let mut bed = Bed::new(1);
    let sock_path = bed.tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let h = &mut bed.hosts[0];
    h.start_with(true, &[("NOTIFY_SOCKET", sock_path.as_os_str())]);
    h.wait_armed();
    let qlen: usize = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(10);
    // One STATUS per cycle (interval 1 s) fills the queue after about qlen seconds; run well
    // past that.
    let run_for = Duration::from_secs(qlen as u64 + 6);
    let start = Instant::now();
    while start.elapsed() < run_for {
        assert!(h.watchdog.fired().is_none(), "the watchdog double fired:\n{}", h.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (pets, seq) = (h.watchdog.keepalives(), own_seq(&bed.volume, 1));
    std::thread::sleep(Duration::from_secs(3));
    let h = &mut bed.hosts[0];
    assert!(h.watchdog.fired().is_none(), "the watchdog double fired:\n{}", h.log_text());
    assert!(h.exited().is_none(), "the agent exited:\n{}", h.log_text());
    assert!(h.watchdog.keepalives() >= pets + 3, "pets stopped:\n{}", h.log_text());
    assert!(own_seq(&bed.volume, 1) >= seq + 2, "heartbeats stopped:\n{}", h.log_text());
    // The status file is still written (by the reporter thread, which does not block either).
    let out = h.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("running"), "status not fresh:\n{text}");
    // The queue really was full: the test exercised the blocking case.
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(got.len() >= qlen, "only {} datagrams queued: {got:?}", got.len());
    assert!(got.iter().any(|m| m.contains("READY=1")), "{got:?}");
}

/// `[daemon] syslog = false` under systemd (no --foreground, stderr not a terminal) wrote
/// nothing at all: the journal, which captures stderr, never saw a line.
#[test]
fn syslog_off_without_foreground_still_logs_to_stderr() {
    let mut bed = Bed::new(1);
    let h = &mut bed.hosts[0];
    assert!(std::fs::read_to_string(&h.config).unwrap().contains("syslog = false"));
    // stderr is the log file: not a terminal.
    h.start_with(false, &[]);
    h.wait_armed();
    assert!(
        wait_until(Duration::from_secs(5), || h.log_text().contains("first heartbeat written")),
        "no log line on stderr:\n{}",
        h.log_text()
    );
    assert!(h.log_text().contains("info: starting: host 1"), "{}", h.log_text());
}

/// Adds lines to a host's configuration file (before it starts).
fn append_config(h: &Host, text: &str) {
    let mut c = std::fs::read_to_string(&h.config).unwrap();
    c.push_str(text);
    std::fs::write(&h.config, c).unwrap();
}

/// `promtool` (Debian package `prometheus`), or a skip with the reason outside CI.
fn promtool(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("promtool")).find(|p| p.is_file()))
        .unwrap_or_default();
    if found.is_none() {
        let reason = format!("{test}: needs promtool (apt-get install prometheus)");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{reason}; CI=true forbids skipping");
        }
        eprintln!("skipping {reason}");
    }
    found
}

/// The value of one sample line (`name{labels} value`) of a textfile.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn metrics_textfile_of_a_running_agent_passes_promtool() {
    let Some(promtool) = promtool("metrics_textfile_of_a_running_agent_passes_promtool") else {
        return;
    };
    let mut bed = Bed::new(2);
    let dir = bed.tmp.path().join("textfile");
    std::fs::create_dir_all(&dir).unwrap();
    let prom = dir.join("hbfence.prom");
    append_config(&bed.hosts[0], &format!("[metrics]\ntextfile = \"{}\"\n", prom.display()));
    for h in &mut bed.hosts {
        h.start();
    }
    for h in &bed.hosts {
        h.wait_armed();
    }
    let h = &bed.hosts[0];
    // Host 2 seen alive and the watchdog armed, in one file written after both happened.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let t = std::fs::read_to_string(&prom).unwrap_or_default();
            sample(&t, "hbfence_peers{state=\"alive\"}") == Some(1.0)
                && sample(&t, "hbfence_watchdog_armed") == Some(1.0)
        }),
        "no metrics file with host 2 alive:\n{}\n{}",
        std::fs::read_to_string(&prom).unwrap_or_default(),
        h.log_text()
    );
    let text = std::fs::read_to_string(&prom).unwrap();
    let out = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&prom).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lease = sample(&text, "hbfence_lease_remaining_seconds").unwrap();
    assert!(lease > 0.0 && lease <= LEASE.as_secs_f64(), "{text}");
    assert_eq!(sample(&text, "hbfence_lease_valid"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "hbfence_doomed"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "hbfence_host_id"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "hbfence_coordinator_id"), Some(1.0), "{text}");
    let vol = format!("{{volume=\"{}\"}}", bed.volume.display());
    assert_eq!(sample(&text, &format!("hbfence_volume_healthy{vol}")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &format!("hbfence_io_errors_total{vol}")), Some(0.0), "{text}");
    let w = sample(&text, &format!("hbfence_last_write_latency_seconds{vol}")).unwrap();
    assert!((0.0..2.0).contains(&w), "{text}");
    assert!(sample(&text, &format!("hbfence_last_read_latency_seconds{vol}")).is_some());
    // Peers by state add up to the peers the status file lists.
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(h.dir.join("run/status.json")).unwrap())
            .unwrap();
    let listed = status["peers"].as_array().unwrap().len() as f64;
    let counted: f64 = text
        .lines()
        .filter(|l| l.starts_with("hbfence_peers{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, listed, "{text}");
    // No temporary file is left where node_exporter looks.
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(names.iter().all(|n| !n.to_string_lossy().ends_with(".prom") || n == "hbfence.prom"));
    // Rewritten every interval (1 s).
    let before = std::fs::metadata(&prom).unwrap().modified().unwrap();
    assert!(wait_until(Duration::from_secs(4), || {
        std::fs::metadata(&prom).unwrap().modified().unwrap() > before
    }));
}

#[test]
fn metrics_directory_that_does_not_exist_is_a_config_error() {
    let mut bed = Bed::new(1);
    let prom = bed.tmp.path().join("missing/hbfence.prom");
    let h = &mut bed.hosts[0];
    append_config(h, &format!("[metrics]\ntextfile = \"{}\"\n", prom.display()));
    let out = h.cli(&["run", "--check"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("missing") && err.contains("does not exist"), "{err}");
    h.start();
    let status = h.wait_exit(Duration::from_secs(10)).expect("run should exit");
    assert_eq!(status.code(), Some(78), "{}", h.log_text());
    assert!(h.log_text().contains("[metrics] textfile"), "{}", h.log_text());
    assert_eq!(h.watchdog.keepalives(), 0, "nothing armed before the check");
}
