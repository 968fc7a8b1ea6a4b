//! Benchmark: reading every block of a 2000-host volume (4001 blocks, 16 MB).
//!
//! Compares, in the same run and on the same device, the daemon's method (ONE O_DIRECT read of
//! blocks 1..=4000) with reading them one block at a time (4000 O_DIRECT reads), and measures
//! `core::view::decode_view` on the result. Targets: a 4K-sector loop device with direct I/O
//! (`losetup --direct-io=on --sector-size 4096` over a file on the target directory's
//! filesystem), the loop's backing file itself, and a file in /dev/shm (tmpfs) for reference.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench --bench volume_read [-- --reps N]`
//! Needs root and /dev/loop-control (prints why and exits otherwise).

#[path = "../tests/support/cluster.rs"]
mod cluster;
#[path = "common.rs"]
mod common;
use common::{command_line, source_state};

use hbfence::core::format::{self, caps, Decoded, FenceMethodKind, Heartbeat, HostState};
use hbfence::core::format::{Command as MailCommand, Mailbox, Verdict, VerdictKind};
use hbfence::core::view::{decode_view, Slot};
use hbfence::volume::{Access, AlignedBuf, Volume};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_HOSTS: u32 = 2000;
const DEFAULT_REPS: usize = 30;
const WARMUP: usize = 2;

/// Loop devices attached by this process, detached by the panic hook if Drop cannot run.
static ATTACHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A loop device over a file; detached on drop (and by the panic hook).
struct Loop(PathBuf);

impl Loop {
    fn attach(file: &Path) -> Result<Loop, String> {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on", "--sector-size", "4096"])
            .arg(file)
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!("losetup failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        ATTACHED.lock().unwrap().push(dev.clone());
        Ok(Loop(dev))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let mut attached = ATTACHED.lock().unwrap_or_else(|p| p.into_inner());
        if attached.contains(&self.0) {
            attached.retain(|d| d != &self.0);
            detach(&self.0);
        }
    }
}

fn detach(dev: &Path) {
    match Command::new("losetup").arg("-d").arg(dev).status() {
        Ok(s) if s.success() => eprintln!("detached {}", dev.display()),
        other => eprintln!("WARNING: could not detach {}: {other:?}", dev.display()),
    }
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("volume_read: {msg}");
    std::process::exit(1)
}

fn preflight() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root (loop devices); run as root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("needs loop devices: /dev/loop-control is missing (modprobe loop)".into());
    }
    if Command::new("losetup").arg("--version").output().is_err() {
        return Err("losetup not found (apt-get install mount)".into());
    }
    Ok(())
}

/// A heartbeat as a live 2000-host cluster would have it; host 1 is the coordinator and
/// carries a few verdicts.
fn heartbeat(id: u32, cluster: [u8; 16]) -> Heartbeat {
    let mut caps = caps::WATCHDOG_ARMED | caps::COORDINATOR_ELIGIBLE | caps::IO_HEALTHY;
    let mut verdicts = vec![];
    if id == 1 {
        caps |= caps::COORDINATOR;
        verdicts = (0..10)
            .map(|i| Verdict {
                host_id: 1000 + i,
                kind: VerdictKind::Fenced,
                method: FenceMethodKind::Ipmi,
                incarnation: 4_000_000_000 + u64::from(i),
                wall_ms: 1_760_000_000_000,
                seq: 77,
                changed_gen: 0,
            })
            .collect();
    }
    Heartbeat {
        cluster,
        host_id: id,
        incarnation: 0x1234_5678_9abc + u64::from(id),
        seq: 100_000 + u64::from(id) * 7,
        wall_ms: 1_760_000_000_000 + u64::from(id),
        mono_ms: 86_400_000 + u64::from(id) * 13,
        boot_id: [id as u8; 16],
        state: HostState::Active,
        watchdog_timeout_s: 10,
        caps,
        ack_nonce: u64::from(id) * 31,
        coordinator: 1,
        verdict_gen: 12,
        verdict_author: 1,
        name: format!("kvm-{id:04}.rack{:02}.example.net", id / 40),
        verdicts,
        verdicts_in_pages: 0,
        lineage: None,
        inventory: Default::default(),
    }
}

/// Writes heartbeats for all hosts (one I/O) and a test message into every 50th mailbox.
fn fill(path: &Path) -> usize {
    let vol = Volume::open(path, Access::ReadWrite).unwrap_or_else(|e| fail(e));
    let header = vol.read_header().unwrap_or_else(|e| fail(e));
    let geo = header.geometry();
    let mut buf = AlignedBuf::new(MAX_HOSTS as usize).unwrap_or_else(|e| fail(e));
    for id in 1..=MAX_HOSTS {
        let block = format::encode_heartbeat(&heartbeat(id, header.cluster)).expect("encode");
        buf.block_mut(id as usize - 1).copy_from_slice(&block);
    }
    vol.write_blocks(geo.heartbeat_block(1), &buf).unwrap_or_else(|e| fail(e));
    let mut mailboxes = 0;
    for id in (50..=MAX_HOSTS).step_by(50) {
        let m = Mailbox {
            cluster: header.cluster,
            host_id: id,
            nonce: u64::from(id) * 1001,
            command: MailCommand::Test,
            sender: 1,
            wall_ms: 1_760_000_000_000,
            target_incarnation: 0,
            sender_name: "kvm-0001".into(),
            seen_verdict_gen: None,
        };
        vol.write_mailbox(&header, &m).unwrap_or_else(|e| fail(e));
        mailboxes += 1;
    }
    mailboxes
}

#[derive(Default)]
struct Samples {
    one_read: Vec<Duration>,
    per_block: Vec<Duration>,
    decode_view: Vec<Duration>,
    decode_blocks: Vec<Duration>,
}

fn measure(path: &Path, reps: usize, expect_mailboxes: usize) -> Samples {
    let vol = Volume::open(path, Access::ReadOnly).unwrap_or_else(|e| fail(e));
    let header = vol.read_header().unwrap_or_else(|e| fail(e));
    let geo = header.geometry();
    let n = 2 * MAX_HOSTS as usize;
    assert_eq!(geo.total_blocks(), n as u64 + 1 + u64::from(MAX_HOSTS) * geo.pages_per_host());
    let mut big = AlignedBuf::new(n).unwrap_or_else(|e| fail(e));
    // One page-aligned buffer per block, allocated up front: the per-block loop times only
    // the reads, not allocation or copies.
    let mut small: Vec<AlignedBuf> =
        (0..n).map(|_| AlignedBuf::new(1).unwrap_or_else(|e| fail(e))).collect();
    let mut s = Samples::default();
    for rep in 0..WARMUP + reps {
        // Alternate which method goes first so neither always follows the other.
        let mut one = Duration::ZERO;
        let mut per = Duration::ZERO;
        for method in if rep % 2 == 0 { [0, 1] } else { [1, 0] } {
            if method == 0 {
                let t = Instant::now();
                vol.read_blocks(1, &mut big).unwrap_or_else(|e| fail(e));
                one = t.elapsed();
            } else {
                let t = Instant::now();
                for (i, b) in small.iter_mut().enumerate() {
                    vol.read_blocks(1 + i as u64, b).unwrap_or_else(|e| fail(e));
                }
                per = t.elapsed();
            }
        }
        let t = Instant::now();
        let view = decode_view(big.as_slice(), geo, &header.cluster);
        let dv = t.elapsed();
        let t = Instant::now();
        let mut records = 0usize;
        for b in &small {
            if matches!(format::decode(b.block(0)), Decoded::Heartbeat(_) | Decoded::Mailbox(_)) {
                records += 1;
            }
        }
        let db = t.elapsed();
        // Sanity: both methods saw the same, complete volume.
        let live = view.slots.iter().filter(|s| matches!(s, Slot::Record(_))).count();
        assert_eq!(live, MAX_HOSTS as usize, "{}: not every heartbeat decoded", path.display());
        assert_eq!(view.mailboxes.len(), expect_mailboxes);
        assert_eq!(records, MAX_HOSTS as usize + expect_mailboxes);
        assert!(small.iter().enumerate().all(|(i, b)| b.block(0) == big.block(i)));
        std::hint::black_box(&view);
        if rep >= WARMUP {
            s.one_read.push(one);
            s.per_block.push(per);
            s.decode_view.push(dv);
            s.decode_blocks.push(db);
        }
    }
    s
}

fn stats(v: &[Duration]) -> (f64, f64, f64, f64) {
    let mut ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    (ms[0], pct(0.5), pct(0.9), ms[ms.len() - 1])
}

fn row(target: &str, what: &str, v: &[Duration]) -> String {
    let (min, p50, p90, max) = stats(v);
    format!("| {target:<29} | {what:<38} | {min:>9.3} | {p50:>9.3} | {p90:>9.3} | {max:>9.3} |")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| fail("--reps needs a number")))
        .unwrap_or(DEFAULT_REPS);
    if let Err(why) = preflight() {
        eprintln!("volume_read: skipped: {why}");
        std::process::exit(if std::env::var("CI").as_deref() == Ok("true") { 1 } else { 0 });
    }
    // Ctrl-C or SIGTERM: detach the loop device before exiting.
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                eprintln!("volume_read: signal {sig}: cleaning up");
                for dev in ATTACHED.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
                    detach(&dev);
                }
                std::process::exit(130);
            }
        });
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        for dev in ATTACHED.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            detach(&dev);
        }
    }));
    let started = Instant::now();
    let base = PathBuf::from(option_env!("CARGO_TARGET_TMPDIR").unwrap_or("/var/tmp"));
    std::fs::create_dir_all(&base).unwrap_or_else(|e| fail(format!("{}: {e}", base.display())));
    let dir = tempfile::tempdir_in(&base).unwrap_or_else(|e| fail(e));
    let shm_dir =
        tempfile::tempdir_in("/dev/shm").unwrap_or_else(|e| fail(format!("/dev/shm: {e}")));
    let file = dir.path().join("hb2000.vol");
    let shm_file = shm_dir.path().join("hb2000.vol");

    let mut mailboxes = 0;
    for f in [&file, &shm_file] {
        let out =
            cluster::hbfence(&["init", "--volume", f.to_str().unwrap(), "--max-hosts", "2000"]);
        if !out.status.success() {
            fail(format!("init {}: {}", f.display(), String::from_utf8_lossy(&out.stderr)));
        }
        mailboxes = fill(f);
    }
    let fs_type = Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE", "--target"])
        .arg(dir.path())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let lo = Loop::attach(&file).unwrap_or_else(|e| fail(e));
    let sector = std::fs::read_to_string(format!(
        "/sys/block/{}/queue/logical_block_size",
        lo.0.file_name().unwrap().to_string_lossy()
    ))
    .unwrap_or_default();
    let dio = std::fs::read_to_string(format!(
        "/sys/block/{}/loop/dio",
        lo.0.file_name().unwrap().to_string_lossy()
    ))
    .unwrap_or_default();
    println!(
        "volume: 2000 hosts, 4001 blocks (16 MB); reading blocks 1..=4000 (2000 heartbeats, 2000 mailboxes of which {mailboxes} hold a message); {reps} reps after {WARMUP} warm-up"
    );
    println!(
        "loop device {} over {} ({fs_type}); logical sector {} bytes, direct I/O {}",
        lo.0.display(),
        file.display(),
        sector.trim(),
        dio.trim()
    );

    let targets: Vec<(String, PathBuf)> = vec![
        (format!("loop 4K dio ({})", lo.0.display()), lo.0.clone()),
        (format!("{fs_type} file (loop backing)"), file.clone()),
        ("tmpfs file (/dev/shm)".into(), shm_file.clone()),
    ];
    let mut results = Vec::new();
    for (name, path) in &targets {
        eprintln!("measuring {name}...");
        results.push((name.clone(), measure(path, reps, mailboxes)));
    }
    drop(lo);

    println!();
    println!("Times in ms over {reps} reps (min / p50 / p90 / max):");
    println!(
        "| {:<29} | {:<38} | {:>9} | {:>9} | {:>9} | {:>9} |",
        "target", "operation", "min", "p50", "p90", "max"
    );
    println!(
        "|{}|{}|{}|{}|{}|{}|",
        "-".repeat(31),
        "-".repeat(40),
        "-".repeat(11),
        "-".repeat(11),
        "-".repeat(11),
        "-".repeat(11)
    );
    for (name, s) in &results {
        println!("{}", row(name, "1 read of 4000 blocks", &s.one_read));
        println!("{}", row(name, "4000 reads of 1 block", &s.per_block));
        println!("{}", row(name, "decode_view (4000 blocks)", &s.decode_view));
        println!("{}", row(name, "format::decode x 4000 (per-block bufs)", &s.decode_blocks));
    }
    println!();
    println!(
        "| {:<29} | {:>18} | {:>24} | {:>24} |",
        "target", "p50 ratio per/one", "one read + decode p50", "cycle budget used at 5 s"
    );
    println!("|{}|{}|{}|{}|", "-".repeat(31), "-".repeat(20), "-".repeat(26), "-".repeat(26));
    for (name, s) in &results {
        let one = stats(&s.one_read).1;
        let per = stats(&s.per_block).1;
        let dec = stats(&s.decode_view).1;
        println!(
            "| {name:<29} | {:>17.1}x | {:>21.3} ms | {:>23.3}% |",
            per / one,
            one + dec,
            (one + dec) / 5000.0 * 100.0
        );
    }
    println!();
    println!("source: {}", source_state());
    println!("command: {}", command_line("volume_read"));
    println!("total run time: {:.1} s", started.elapsed().as_secs_f64());
}
