//! Self-test of the FUSE fault injector used by the process-level integration tests.
//!
//! Needs root and /dev/fuse. Without them each test prints why and passes, unless `CI=true`,
//! where a silent skip would hide a broken environment, so it fails instead.

#[path = "support/faultfs.rs"]
mod faultfs;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use faultfs::{Fault, FaultFs};

const BLOCK: usize = 4096;
/// Liveness bound for "eventually completes" checks; only there so a bug fails instead of
/// hanging the suite, never a performance assertion.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn fuse_usable() -> bool {
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("not running as root")
    } else if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing")
    } else if OpenOptions::new().read(true).write(true).open("/dev/fuse").is_err() {
        Some("/dev/fuse cannot be opened (device cgroup?)")
    } else {
        None
    };
    match reason {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("faultfs self-test cannot run under CI=true: {why}")
        }
        Some(why) => {
            eprintln!("skipping faultfs self-test: {why}");
            false
        }
    }
}

/// Backing dir, mountpoint and mount, all inside one temp dir.
struct Fixture {
    // Dropped after `fs` (field order), so the mountpoint outlives the mount.
    fs: FaultFs,
    backing: PathBuf,
    /// Scratch space outside the backing dir (dd input files).
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("backing");
        std::fs::create_dir(&backing).unwrap();
        let fs = FaultFs::mount(&backing, &dir.path().join("mnt")).unwrap();
        Fixture { fs, backing, dir }
    }

    /// Creates `name` in the backing dir with `blocks` blocks, block i filled with `fill + i`.
    fn seed(&self, name: &str, blocks: usize, fill: u8) -> Vec<u8> {
        let data: Vec<u8> = (0..blocks).flat_map(|i| [fill.wrapping_add(i as u8); BLOCK]).collect();
        std::fs::write(self.backing.join(name), &data).unwrap();
        data
    }

    fn mounted(&self, name: &str) -> PathBuf {
        self.fs.mountpoint().join(name)
    }

    fn backing_block(&self, name: &str, index: usize) -> Vec<u8> {
        let data = std::fs::read(self.backing.join(name)).unwrap();
        data[index * BLOCK..(index + 1) * BLOCK].to_vec()
    }
}

/// A 4096-byte, 4096-aligned buffer as O_DIRECT requires.
struct AlignedBlock {
    raw: Vec<u8>,
    off: usize,
}

impl AlignedBlock {
    fn new(fill: u8) -> AlignedBlock {
        let raw = vec![fill; 2 * BLOCK];
        let off = raw.as_ptr().align_offset(BLOCK);
        AlignedBlock { raw, off }
    }

    fn get(&self) -> &[u8] {
        &self.raw[self.off..self.off + BLOCK]
    }

    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.off..self.off + BLOCK]
    }
}

/// Compact check that `bytes` is `len` bytes of `fill` (assert_eq! would dump 4 KiB).
#[track_caller]
fn assert_filled(bytes: &[u8], len: usize, fill: u8, what: &str) {
    assert_eq!(bytes.len(), len, "{what}: length");
    if let Some(i) = bytes.iter().position(|&b| b != fill) {
        panic!("{what}: byte {i} is {:#04x}, expected {fill:#04x}", bytes[i]);
    }
}

fn open_direct(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
        .unwrap_or_else(|e| panic!("O_DIRECT open of {path:?}: {e}"))
}

fn pwrite_direct(file: &File, fill: u8, index: usize) -> io::Result<usize> {
    file.write_at(AlignedBlock::new(fill).get(), (index * BLOCK) as u64)
}

fn pread_direct(file: &File, index: usize) -> io::Result<Vec<u8>> {
    let mut buf = AlignedBlock::new(0);
    let n = file.read_at(buf.get_mut(), (index * BLOCK) as u64)?;
    Ok(buf.get()[..n].to_vec())
}

/// `dd` in a separate process writing one block of `fill` at block `index` with
/// O_DIRECT|O_DSYNC, like an agent would.
fn spawn_dd_write(src_dir: &Path, target: &Path, fill: u8, index: usize) -> Child {
    let src = src_dir.join(format!("src-{fill:02x}-{}", rand_suffix()));
    std::fs::write(&src, [fill; BLOCK]).unwrap();
    Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg(format!("of={}", target.display()))
        .args(["bs=4096", "count=1", "oflag=direct,dsync", "conv=notrunc,fsync"])
        .arg(format!("seek={index}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dd")
}

/// `dd` in a separate process reading block `index` with O_DIRECT.
fn dd_read(target: &Path, index: usize) -> Vec<u8> {
    let out = Command::new("dd")
        .arg(format!("if={}", target.display()))
        .args(["bs=4096", "count=1", "iflag=direct", "status=none"])
        .arg(format!("skip={index}"))
        .output()
        .expect("run dd");
    assert!(out.status.success(), "dd read failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

fn wait_child(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child {} still running after {HANG_GUARD:?}", child.id());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG_GUARD;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn passthrough_direct_write_lands_in_backing_file() {
    if !fuse_usable() {
        return;
    }
    let fx = Fixture::new();
    fx.seed("vol", 4, 0x10);
    let mut dd = spawn_dd_write(fx.dir.path(), &fx.mounted("vol"), 0xA5, 2);
    assert!(wait_child(&mut dd).success(), "O_DIRECT dd write through the mount failed");

    assert_filled(&fx.backing_block("vol", 2), BLOCK, 0xA5, "block did not land at 8192");
    assert_filled(&fx.backing_block("vol", 1), BLOCK, 0x11, "neighbour block clobbered");
    assert_filled(&fx.backing_block("vol", 3), BLOCK, 0x13, "neighbour block clobbered");
    assert_filled(&dd_read(&fx.mounted("vol"), 2), BLOCK, 0xA5, "dd read-back of block 2");

    // In-process O_DIRECT too, plus size via stat and ftruncate through the mount.
    let f = open_direct(&fx.mounted("vol"));
    assert_filled(&pread_direct(&f, 1).unwrap(), BLOCK, 0x11, "read of block 1");
    assert_eq!(std::fs::metadata(fx.mounted("vol")).unwrap().len(), 4 * BLOCK as u64);
    f.set_len(8 * BLOCK as u64).unwrap();
    assert_eq!(std::fs::metadata(fx.backing.join("vol")).unwrap().len(), 8 * BLOCK as u64);
    nix::fcntl::fallocate(
        std::os::unix::io::AsRawFd::as_raw_fd(&f),
        nix::fcntl::FallocateFlags::empty(),
        0,
        16 * BLOCK as i64,
    )
    .unwrap();
    assert_eq!(std::fs::metadata(fx.mounted("vol")).unwrap().len(), 16 * BLOCK as u64);

    // Every O_DIRECT op reached the filesystem exactly once (no page cache in between).
    let stats = fx.fs.stats("vol");
    assert_eq!((stats.reads, stats.writes, stats.failed), (2, 1, 0), "{stats:?}");
}

#[test]
fn create_through_mount_and_readdir() {
    if !fuse_usable() {
        return;
    }
    let fx = Fixture::new();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(fx.mounted("new"))
        .unwrap();
    assert_eq!(pwrite_direct(&f, 0x42, 1).unwrap(), BLOCK);
    assert_filled(&fx.backing_block("new", 1), BLOCK, 0x42, "backing block 1");
    let names: Vec<String> = std::fs::read_dir(fx.fs.mountpoint())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["new"]);
}

#[test]
fn freeze_blocks_only_that_file_until_cleared() {
    if !fuse_usable() {
        return;
    }
    let fx = Fixture::new();
    fx.seed("a", 2, 0x00);
    fx.seed("b", 2, 0x00);
    fx.fs.set_fault("a", Fault::Freeze);

    let mut frozen = spawn_dd_write(fx.dir.path(), &fx.mounted("a"), 0xAA, 1);
    wait_until("write to a to be frozen", || fx.fs.stats("a").frozen_now == 1);
    thread::sleep(Duration::from_millis(300));
    assert!(frozen.try_wait().unwrap().is_none(), "write to frozen file completed");
    assert_eq!(fx.fs.stats("a").writes, 0);

    // Another process doing I/O on another file of the same mount is not held up.
    let mut other = spawn_dd_write(fx.dir.path(), &fx.mounted("b"), 0xBB, 1);
    assert!(wait_child(&mut other).success());
    assert_filled(&fx.backing_block("b", 1), BLOCK, 0xBB, "backing block of the unfrozen file");
    assert_filled(&dd_read(&fx.mounted("b"), 1), BLOCK, 0xBB, "dd read of the unfrozen file");
    assert!(frozen.try_wait().unwrap().is_none(), "write to frozen file completed");
    assert_filled(&fx.backing_block("a", 1), BLOCK, 0x01, "frozen write already persisted");

    fx.fs.clear_fault("a");
    assert!(wait_child(&mut frozen).success(), "released write failed");
    assert_filled(&fx.backing_block("a", 1), BLOCK, 0xAA, "released write");
    let stats = fx.fs.stats("a");
    assert_eq!((stats.writes, stats.failed, stats.frozen_now), (1, 0, 0), "{stats:?}");
}

#[test]
fn freeze_then_eio_fails_the_parked_request() {
    if !fuse_usable() {
        return;
    }
    let fx = Fixture::new();
    fx.seed("a", 1, 0x00);
    fx.fs.set_fault("a", Fault::Freeze);
    let f = open_direct(&fx.mounted("a"));
    let reader = thread::spawn(move || pread_direct(&f, 0));
    wait_until("read to be frozen", || fx.fs.stats("a").frozen_now == 1);
    fx.fs.set_fault("a", Fault::Eio);
    let err = reader.join().unwrap().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
}

#[test]
fn eio_fails_reads_and_writes_until_cleared() {
    if !fuse_usable() {
        return;
    }
    let fx = Fixture::new();
    fx.seed("vol", 2, 0x30);
    let f = open_direct(&fx.mounted("vol"));
    fx.fs.set_fault("vol", Fault::Eio);

    let err = pread_direct(&f, 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "read: {err}");
    let err = pwrite_direct(&f, 0x77, 1).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "write: {err}");
    assert_filled(&fx.backing_block("vol", 1), BLOCK, 0x31, "failed write persisted");
    assert_eq!(fx.fs.stats("vol").failed, 2);

    fx.fs.clear_fault("vol");
    assert_filled(&pread_direct(&f, 0).unwrap(), BLOCK, 0x30, "read after clear");
    assert_eq!(pwrite_direct(&f, 0x77, 1).unwrap(), BLOCK);
    assert_filled(&fx.backing_block("vol", 1), BLOCK, 0x77, "backing block 1");
}

#[test]
fn torn_write_keeps_only_first_512_bytes() {
    if !fuse_usable() {
        return;
    }
    let fx = Fixture::new();
    fx.seed("vol", 3, 0xA0);
    fx.fs.set_fault("vol", Fault::Torn);

    let f = open_direct(&fx.mounted("vol"));
    assert_eq!(pwrite_direct(&f, 0x55, 1).unwrap(), BLOCK, "torn write must report success");
    let block = fx.backing_block("vol", 1);
    assert_filled(&block[..512], 512, 0x55, "torn block head");
    assert_filled(&block[512..], BLOCK - 512, 0xA1, "torn block tail");
    assert_filled(&fx.backing_block("vol", 0), BLOCK, 0xA0, "block before the torn one");
    assert_filled(&fx.backing_block("vol", 2), BLOCK, 0xA2, "block after the torn one");
    // Reads stay honest under Torn, so the tear is visible to the reader.
    assert!(pread_direct(&f, 1).unwrap() == block, "read of the torn block");

    // Also from another process.
    let mut dd = spawn_dd_write(fx.dir.path(), &fx.mounted("vol"), 0x66, 2);
    assert!(wait_child(&mut dd).success());
    let block = fx.backing_block("vol", 2);
    assert_filled(&block[..512], 512, 0x66, "torn block head");
    assert_filled(&block[512..], BLOCK - 512, 0xA2, "torn block tail");
}

#[test]
fn garbage_reads_differ_and_writes_pass() {
    if !fuse_usable() {
        return;
    }
    let fx = Fixture::new();
    let content = fx.seed("vol", 2, 0x00);
    fx.fs.set_fault("vol", Fault::Garbage);

    let first = dd_read(&fx.mounted("vol"), 0);
    assert_eq!(first.len(), BLOCK);
    assert!(first != content[..BLOCK], "garbage read returned the real block");
    let f = open_direct(&fx.mounted("vol"));
    let second = pread_direct(&f, 0).unwrap();
    assert_eq!(second.len(), BLOCK);
    assert!(second != content[..BLOCK], "garbage read returned the real block");
    assert!(second != first, "garbage is not random");

    assert_eq!(pwrite_direct(&f, 0x99, 1).unwrap(), BLOCK);
    assert_filled(&fx.backing_block("vol", 1), BLOCK, 0x99, "backing block 1");

    fx.fs.clear_fault("vol");
    assert!(pread_direct(&f, 0).unwrap() == content[..BLOCK], "read after clear");
}

#[test]
fn faults_also_hit_buffered_reads() {
    if !fuse_usable() {
        return;
    }
    let fx = Fixture::new();
    fx.seed("vol", 1, 0x40);
    let f = File::open(fx.mounted("vol")).unwrap();
    let mut buf = vec![0; BLOCK];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_filled(&buf, BLOCK, 0x40, "buffered read");
    // Without FOPEN_DIRECT_IO this re-read is served from the page cache and never fails.
    fx.fs.set_fault("vol", Fault::Eio);
    let err = f.read_exact_at(&mut buf, 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(fx.fs.stats("vol").reads, 2);
}

#[test]
fn delay_slows_each_op_down() {
    if !fuse_usable() {
        return;
    }
    let fx = Fixture::new();
    fx.seed("vol", 2, 0x00);
    let f = open_direct(&fx.mounted("vol"));
    let delay = Duration::from_millis(200);
    fx.fs.set_fault("vol", Fault::Delay(delay));

    let t = Instant::now();
    assert_eq!(pwrite_direct(&f, 0x12, 1).unwrap(), BLOCK);
    assert!(t.elapsed() >= delay, "write took only {:?}", t.elapsed());
    let t = Instant::now();
    assert_filled(&pread_direct(&f, 1).unwrap(), BLOCK, 0x12, "read of block 1");
    assert!(t.elapsed() >= delay, "read took only {:?}", t.elapsed());
    assert_filled(&fx.backing_block("vol", 1), BLOCK, 0x12, "backing block 1");
}

#[test]
fn drop_releases_frozen_requests_and_unmounts() {
    if !fuse_usable() {
        return;
    }
    let fx = Fixture::new();
    fx.seed("vol", 2, 0x00);
    fx.fs.set_fault("vol", Fault::Freeze);
    let mut frozen = spawn_dd_write(fx.dir.path(), &fx.mounted("vol"), 0xEE, 1);
    wait_until("write to be frozen", || fx.fs.stats("vol").frozen_now == 1);

    let Fixture { fs, backing, dir: _dir } = fx;
    let mountpoint = fs.mountpoint().to_path_buf();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        drop(fs);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(HANG_GUARD).expect("dropping FaultFs with a frozen request hung");

    assert!(!wait_child(&mut frozen).success(), "released write must fail, not persist");
    assert!(!faultfs::is_fuse_mounted(&mountpoint), "still in /proc/self/mountinfo");
    assert!(!mountinfo_mentions(&mountpoint));
    let data = std::fs::read(backing.join("vol")).unwrap();
    assert_filled(&data[BLOCK..], BLOCK, 0x01, "write released by drop persisted");
}

fn mountinfo_mentions(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let needle = format!(" {} ", path.display());
    info.lines().any(|l| l.contains(&needle))
}

/// Environment variables passed to `crashing_mount_helper`.
const HELPER_MODE: &str = "FAULTFS_SELFTEST_HELPER";
const HELPER_BACKING: &str = "FAULTFS_SELFTEST_BACKING";
const HELPER_MNT: &str = "FAULTFS_SELFTEST_MNT";

/// Not a test: re-executed by the crash tests below as a child process that mounts and then
/// gets SIGKILLed. Does nothing when run by hand.
#[test]
#[ignore = "helper process for the crash tests"]
fn crashing_mount_helper() {
    let Ok(mode) = std::env::var(HELPER_MODE) else { return };
    let backing = PathBuf::from(std::env::var(HELPER_BACKING).unwrap());
    let mnt = PathBuf::from(std::env::var(HELPER_MNT).unwrap());
    // Keep the mount alive until killed.
    let _keep: Box<dyn std::any::Any> = match mode.as_str() {
        "faultfs" => Box::new(FaultFs::mount(&backing, &mnt).unwrap()),
        // A bare mount without auto-unmount: killing its owner leaves a dead (ENOTCONN) mount.
        _ => Box::new(fuser::spawn_mount2(Inert, &mnt, &[]).unwrap()),
    };
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

struct Inert;
impl fuser::Filesystem for Inert {}

/// Mounts at `mnt` from a child process and SIGKILLs it once the mount is visible.
fn crash_mount_owner(mode: &str, backing: &Path, mnt: &Path) {
    std::fs::create_dir_all(mnt).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crashing_mount_helper", "--ignored", "--test-threads=1"])
        .env(HELPER_MODE, mode)
        .env(HELPER_BACKING, backing)
        .env(HELPER_MNT, mnt)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mnt = mnt.canonicalize().unwrap();
    wait_until("helper to mount", || faultfs::is_fuse_mounted(&mnt));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn stale_mount_from_crashed_owner_is_replaced() {
    if !fuse_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&backing).unwrap();
    std::fs::write(backing.join("vol"), [0x5A; BLOCK]).unwrap();
    crash_mount_owner("bare", &backing, &mnt);
    let err = std::fs::metadata(&mnt).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "precondition: mount is stale");

    let fs = FaultFs::mount(&backing, &mnt).unwrap();
    let f = open_direct(&fs.mountpoint().join("vol"));
    assert_filled(&pread_direct(&f, 0).unwrap(), BLOCK, 0x5A, "read through the new mount");
    drop(f);
    drop(fs);
    assert!(!faultfs::is_fuse_mounted(&mnt.canonicalize().unwrap()));
}

#[test]
fn crashed_owner_is_auto_unmounted() {
    if !fuse_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&backing).unwrap();
    crash_mount_owner("faultfs", &backing, &mnt);
    let mnt = mnt.canonicalize().unwrap_or(mnt);
    wait_until("auto-unmount after owner died", || !faultfs::is_fuse_mounted(&mnt));
}
