//! Hardware watchdog driver (`/dev/watchdog`) and its FIFO test double.
//!
//! Opening a watchdog device arms it, so the daemon only *inspects* the device at start-up
//! (sysfs, /proc holders) and opens it after the first successful heartbeat.
//!
//! A device is used only if its timer keeps running after the device is closed without the
//! magic character (the driver has WDIOF_MAGICCLOSE, or nowayout is set): otherwise a crashed
//! or killed agent would stop the timer and leave the host unguarded, so [`Watchdog::arm`]
//! closes it again and answers [`Armed::Unguarded`] (see [`after_close`]).
//!
//! Test double (not for production): when the configured device is a FIFO, no ioctl is made;
//! each keepalive writes one byte `k`, a clean stop writes `V` before closing. The harness on
//! the other end emulates the timer. The double has magic close unless the TEST-ONLY sidecar
//! file `FIFO.test-driver` (next to the FIFO) says otherwise, with the lines
//! `magic_close = true|false` and `nowayout = true|false`: that is how process tests emulate a
//! driver whose timer stops on close. A kernel device never reads such a file.

use crate::sys;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct WatchdogError {
    pub device: PathBuf,
    pub message: String,
    /// The configuration (or the volume's timing) is wrong: a restart cannot fix it. Otherwise
    /// the device is not available (yet): no driver loaded, busy; a restart may succeed.
    pub config: bool,
}

impl fmt::Display for WatchdogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "watchdog {}: {}", self.device.display(), self.message)
    }
}

impl std::error::Error for WatchdogError {}

fn err(device: &Path, message: impl Into<String>) -> WatchdogError {
    WatchdogError { device: device.to_path_buf(), message: message.into(), config: false }
}

/// An error that only a change of the configuration (or of the volume) fixes.
fn config_err(device: &Path, message: impl Into<String>) -> WatchdogError {
    WatchdogError { config: true, ..err(device, message) }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Kernel,
    /// FIFO test double.
    Double,
}

/// What can be learned about a device without opening (arming) it.
#[derive(Clone, Debug, Default)]
pub struct DeviceInfo {
    pub identity: Option<String>,
    pub timeout: Option<u32>,
    pub min_timeout: Option<u32>,
    pub max_timeout: Option<u32>,
    pub state: Option<String>,
    pub nowayout: Option<bool>,
    /// WDIOF_* options from sysfs `options` (newer kernels) or the double's sidecar.
    pub options: Option<u32>,
    pub sysfs: Option<PathBuf>,
    /// Processes holding the device open: (pid, command).
    pub holders: Vec<(u32, String)>,
}

/// Processes that have `path` open, from /proc/*/fd.
pub fn holders(path: &Path) -> Vec<(u32, String)> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    // /dev/watchdog and /dev/watchdog0 are the same driver: count both as "the device".
    let mut targets = vec![target.clone()];
    if target == Path::new("/dev/watchdog") {
        targets.push(PathBuf::from("/dev/watchdog0"));
    } else if target == Path::new("/dev/watchdog0") {
        targets.push(PathBuf::from("/dev/watchdog"));
    }
    let mut found = Vec::new();
    let own = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else { return found };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        // Only writers drive a watchdog (a FIFO double's reader is the test harness).
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| targets.contains(&l))
                && opened_for_writing(&entry.path().join("fdinfo").join(fd.file_name()))
        });
        if holds {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push((pid, comm.trim().to_string()));
        }
    }
    found
}

/// An fdinfo that cannot be read means the descriptor is gone: a child of another program
/// between fork and exec shows that program's descriptors in `fd/`, and exec closes them (and
/// renames the process) before we get here. Counting it as a holder refused a start because a
/// test harness spawned an agent at that instant.
fn opened_for_writing(fdinfo: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(fdinfo) else { return false };
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| i64::from_str_radix(f.trim(), 8).ok());
    flags.is_none_or(|f| f & 3 != 0)
}

fn sysfs_dir(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(path).ok()?.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let dev = format!("{major}:{minor}");
    for entry in std::fs::read_dir("/sys/class/watchdog").ok()?.flatten() {
        if std::fs::read_to_string(entry.path().join("dev")).is_ok_and(|d| d.trim() == dev) {
            return Some(entry.path());
        }
    }
    // /dev/watchdog (10:130) is the legacy alias of watchdog0.
    let legacy = PathBuf::from("/sys/class/watchdog/watchdog0");
    (major == 10 && minor == 130 && legacy.exists()).then_some(legacy)
}

/// Inspects a device without opening it.
pub fn inspect(path: &Path) -> Result<(DeviceKind, DeviceInfo), WatchdogError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        err(
            path,
            format!(
                "{e}. No watchdog driver is loaded? Load one (e.g. `modprobe i6300esb`, `modprobe iTCO_wdt`, or `modprobe softdog` as a last resort) or set [watchdog] device"
            ),
        )
    })?;
    let ft = meta.file_type();
    let kind = if ft.is_fifo() {
        DeviceKind::Double
    } else if ft.is_char_device() {
        DeviceKind::Kernel
    } else {
        let what = if ft.is_file() {
            "a regular file"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "neither a character device nor a FIFO test double"
        };
        return Err(config_err(
            path,
            format!("is not a watchdog device ({what}); set [watchdog] device to /dev/watchdog or /dev/watchdogN"),
        ));
    };
    let mut info = DeviceInfo { holders: holders(path), ..DeviceInfo::default() };
    if kind == DeviceKind::Kernel {
        use std::os::unix::fs::MetadataExt;
        let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
        let legacy = major == 10 && minor == 130;
        let known = sysfs_dir(path);
        if known.is_none() && !legacy && Path::new("/sys/class/watchdog").is_dir() {
            return Err(config_err(
                path,
                format!("is not a watchdog device (character device {major}:{minor} has no /sys/class/watchdog entry); set [watchdog] device to /dev/watchdog or /dev/watchdogN"),
            ));
        }
        if let Some(dir) = known {
            let read = |name: &str| {
                std::fs::read_to_string(dir.join(name)).ok().map(|s| s.trim().to_string())
            };
            info.identity = read("identity");
            info.timeout = read("timeout").and_then(|s| s.parse().ok());
            info.min_timeout = read("min_timeout").and_then(|s| s.parse().ok());
            info.max_timeout = read("max_timeout").and_then(|s| s.parse().ok());
            info.state = read("state");
            info.nowayout = read("nowayout").map(|s| s == "1");
            info.options = read("options").and_then(|s| {
                u32::from_str_radix(s.trim_start_matches("0x").trim_start_matches("0X"), 16).ok()
            });
            info.sysfs = Some(dir);
        }
    } else {
        let (options, nowayout) = double_driver(path)?;
        info.identity = Some("FIFO test double".into());
        info.options = Some(options);
        info.nowayout = nowayout;
    }
    Ok((kind, info))
}

/// The test-only sidecar of a FIFO double: `FIFO.test-driver`.
pub fn double_sidecar(fifo: &Path) -> PathBuf {
    let mut name = fifo.as_os_str().to_os_string();
    name.push(".test-driver");
    PathBuf::from(name)
}

/// The options and nowayout the FIFO double emulates (default: magic close, nowayout unknown).
fn double_driver(fifo: &Path) -> Result<(u32, Option<bool>), WatchdogError> {
    let sidecar = double_sidecar(fifo);
    let mut options = sys::wdiof::SETTIMEOUT | sys::wdiof::MAGICCLOSE | sys::wdiof::KEEPALIVEPING;
    let mut nowayout = None;
    let text = match std::fs::read_to_string(&sidecar) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((options, nowayout)),
        Err(e) => {
            return Err(config_err(fifo, format!("test double sidecar {}: {e}", sidecar.display())))
        }
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let bad = || {
            config_err(
                fifo,
                format!(
                    "test double sidecar {}: cannot parse {line:?}: expected `magic_close = true|false` or `nowayout = true|false`",
                    sidecar.display()
                ),
            )
        };
        let (key, value) = line.split_once('=').ok_or_else(bad)?;
        let value = match value.trim() {
            "true" => true,
            "false" => false,
            _ => return Err(bad()),
        };
        match key.trim() {
            "magic_close" if value => options |= sys::wdiof::MAGICCLOSE,
            "magic_close" => options &= !sys::wdiof::MAGICCLOSE,
            "nowayout" => nowayout = Some(value),
            _ => return Err(bad()),
        }
    }
    Ok((options, nowayout))
}

/// Whether a watchdog keeps running after its device is closed without the magic character.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterClose {
    /// It keeps running (why): a crashed or killed agent still gets the host reset.
    KeepsRunning(String),
    /// It stops (why): it cannot guard this host against a crashed agent.
    Stops(String),
}

/// The kernel stops a timer on close unless the driver has WDIOF_MAGICCLOSE (and no `V` was
/// written) or nowayout is set (`watchdog_release` in drivers/watchdog/watchdog_dev.c).
pub fn after_close(identity: &str, options: u32, nowayout: Option<bool>) -> AfterClose {
    if options & sys::wdiof::MAGICCLOSE != 0 {
        return AfterClose::KeepsRunning(format!(
            "driver {identity} has magic close (WDIOF_MAGICCLOSE): closed without 'V' its timer keeps running"
        ));
    }
    if nowayout == Some(true) {
        return AfterClose::KeepsRunning(format!(
            "driver {identity} has nowayout=1: once started its timer cannot be stopped"
        ));
    }
    let nowayout = match nowayout {
        Some(_) => "nowayout is 0",
        None => "nowayout is unknown (no sysfs entry)",
    };
    AfterClose::Stops(format!(
        "driver {identity} has no magic close (WDIOF_MAGICCLOSE) and {nowayout}: closing the device stops its timer, so a crashed or killed agent would leave this host unguarded"
    ))
}

/// What an operator does about a watchdog whose timer stops on close.
pub const UNGUARDED_ADVICE: &str = "This host runs WITHOUT watchdog protection: it does not advertise an armed watchdog, so peers can fence it only through its BMC (give it a [[peer]] bmc or agent in the config of every coordinator-eligible host), never by the watchdog bound. To fix: use a watchdog driver with magic close, or load this driver with nowayout=1 (`modprobe DRIVER nowayout=1`, made persistent with `options DRIVER nowayout=1` in /etc/modprobe.d/), then restart hbfence";

/// Start-up check: the device exists, is a watchdog, nobody holds it, and the timeout fits.
pub fn precheck(path: &Path, timeout_s: u32) -> Result<DeviceKind, WatchdogError> {
    let (kind, info) = inspect(path)?;
    if let Some(&(pid, ref comm)) = info.holders.first() {
        return Err(err(
            path,
            format!(
                "busy: held open by process {pid} ({comm}). Only one program may drive the watchdog: stop it (e.g. `systemctl stop {comm}`, or disable RuntimeWatchdogSec in systemd's system.conf if it is systemd) and start hbfence again"
            ),
        ));
    }
    if let Some(max) = info.max_timeout {
        if max < timeout_s {
            return Err(config_err(
                path,
                format!(
                    "the driver ({}) supports at most {max} s, the volume's watchdog_timeout is {timeout_s} s; re-create the volume with --watchdog-timeout {max} or less",
                    info.identity.as_deref().unwrap_or("unknown")
                ),
            ));
        }
    }
    if let Some(min) = info.min_timeout {
        if min > timeout_s {
            return Err(config_err(
                path,
                format!(
                    "the driver's minimum timeout is {min} s, above watchdog_timeout {timeout_s} s"
                ),
            ));
        }
    }
    Ok(kind)
}

/// The outcome of [`Watchdog::arm`].
pub enum Armed {
    /// The watchdog guards this host.
    Guarding(Watchdog),
    /// The device's timer stops on close: it was closed again (stopped); why.
    Unguarded(String),
}

/// An armed watchdog.
pub struct Watchdog {
    file: Option<File>,
    path: PathBuf,
    kind: DeviceKind,
}

impl Watchdog {
    /// Opens (arms) the device and sets the timeout, verifying what the driver applied. A
    /// device whose timer stops on close is closed again at once: `Armed::Unguarded`.
    pub fn arm(path: &Path, timeout_s: u32) -> Result<Armed, WatchdogError> {
        let (kind, info) = inspect(path)?;
        match kind {
            DeviceKind::Double => {
                // Non-blocking open fails at once if no harness is reading, instead of hanging.
                let file = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(path)
                    .map_err(|e| err(path, format!("cannot open the FIFO test double: {e} (is the harness reading it?)")))?;
                log::warn!(
                    "watchdog {} is a FIFO: using the TEST DOUBLE, no hardware watchdog protects this host; never use this in production",
                    path.display()
                );
                let mut wd = Watchdog { file: Some(file), path: path.to_path_buf(), kind };
                let options = info.options.unwrap_or(0);
                if let AfterClose::Stops(why) =
                    after_close("FIFO test double", options, info.nowayout)
                {
                    // Closing stops the (emulated) timer: nothing guards the host any more.
                    wd.abandon();
                    return Ok(Armed::Unguarded(why));
                }
                Ok(Armed::Guarding(wd))
            }
            DeviceKind::Kernel => {
                let file = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(path)
                    .map_err(|e| {
                        let who = holders(path);
                        let hint = match who.first() {
                            Some((pid, comm)) => format!(" (held by process {pid} {comm})"),
                            None => String::new(),
                        };
                        err(path, format!("cannot open: {e}{hint}"))
                    })?;
                let mut wd = Watchdog { file: Some(file), path: path.to_path_buf(), kind };
                match wd.configure(timeout_s, info.nowayout) {
                    Ok(AfterClose::KeepsRunning(_)) => Ok(Armed::Guarding(wd)),
                    Ok(AfterClose::Stops(why)) => {
                        // Without magic close and nowayout, closing stops the timer.
                        wd.disarm();
                        Ok(Armed::Unguarded(why))
                    }
                    Err(e) => {
                        // Armed by the open: disarm before giving up, if the driver allows it.
                        wd.disarm();
                        Err(e)
                    }
                }
            }
        }
    }

    /// Checks the driver (first whether it keeps running after close, then the timeout).
    fn configure(
        &mut self,
        timeout_s: u32,
        nowayout: Option<bool>,
    ) -> Result<AfterClose, WatchdogError> {
        let path = self.path.clone();
        let Some(file) = &self.file else { return Err(err(&path, "not open")) };
        let info = sys::watchdog_get_support(file.as_fd()).map_err(|e| {
            err(&path, format!("WDIOC_GETSUPPORT failed: {e}: this is not a watchdog device; check [watchdog] device"))
        })?;
        let close = after_close(&info.identity(), info.options, nowayout);
        if let AfterClose::Stops(_) = close {
            return Ok(close);
        }
        if info.options & sys::wdiof::SETTIMEOUT == 0 {
            return Err(err(
                &path,
                format!("driver {} cannot set its timeout (no WDIOF_SETTIMEOUT)", info.identity()),
            ));
        }
        let applied = sys::watchdog_set_timeout(file.as_fd(), timeout_s)
            .map_err(|e| err(&path, format!("WDIOC_SETTIMEOUT {timeout_s} s failed: {e}")))?;
        let actual = sys::watchdog_get_timeout(file.as_fd()).unwrap_or(applied);
        if actual != timeout_s {
            return Err(err(
                &path,
                format!(
                    "driver {} applied a timeout of {actual} s instead of {timeout_s} s; re-create the volume with a watchdog_timeout the driver supports",
                    info.identity()
                ),
            ));
        }
        if nowayout == Some(true) {
            log::warn!(
                "watchdog {}: driver {} has nowayout=1: a clean stop cannot disarm it (the host resets {timeout_s} s after `systemctl stop hbfence` unless hbfence runs again)",
                path.display(),
                info.identity()
            );
        }
        Ok(close)
    }

    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    pub fn keepalive(&mut self) -> io::Result<()> {
        let Some(file) = &mut self.file else { return Ok(()) };
        match self.kind {
            DeviceKind::Kernel => sys::watchdog_keepalive(file.as_fd()),
            DeviceKind::Double => match file.write(b"k") {
                Ok(_) => Ok(()),
                // The harness is slow to drain: a missed byte only makes the double stricter.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    /// Magic close: `V` then close. Only after a clean leave.
    /// Closes with the magic character; false if it could not be written (the timer runs on).
    pub fn disarm(&mut self) -> bool {
        if let Some(mut file) = self.file.take() {
            if let Err(e) = file.write_all(b"V") {
                log::error!("watchdog {}: magic close failed: {e}", self.path.display());
                return false;
            }
        }
        true
    }

    /// Closes without the magic character: the timer keeps running and will fire.
    pub fn abandon(&mut self) {
        self.file.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::wdiof::{KEEPALIVEPING, MAGICCLOSE, SETTIMEOUT};

    fn stops(options: u32, nowayout: Option<bool>) -> bool {
        matches!(after_close("d", options, nowayout), AfterClose::Stops(_))
    }

    #[test]
    fn only_magic_close_or_nowayout_keeps_the_timer_running_after_close() {
        assert!(!stops(SETTIMEOUT | MAGICCLOSE, None));
        assert!(!stops(SETTIMEOUT | MAGICCLOSE, Some(false)));
        assert!(!stops(SETTIMEOUT, Some(true)));
        assert!(!stops(MAGICCLOSE, Some(true)));
        assert!(stops(SETTIMEOUT | KEEPALIVEPING, Some(false)));
        assert!(stops(SETTIMEOUT | KEEPALIVEPING, None));
        assert!(stops(0, None));
    }

    #[test]
    fn only_a_descriptor_open_for_writing_holds_the_device() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("double");
        std::fs::write(&path, b"").unwrap();
        let fdinfo =
            |f: &std::fs::File| PathBuf::from(format!("/proc/self/fdinfo/{}", f.as_raw_fd()));
        let reader = std::fs::File::open(&path).unwrap();
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert!(!opened_for_writing(&fdinfo(&reader)));
        assert!(opened_for_writing(&fdinfo(&writer)));
        // Above any RLIMIT_NOFILE (nr_open is at most 2^30): never open, like a descriptor
        // that exec closed between the readlink and the fdinfo read.
        let gone = PathBuf::from(format!("/proc/self/fdinfo/{}", i32::MAX));
        assert!(!opened_for_writing(&gone), "a descriptor closed meanwhile holds nothing");
    }

    #[test]
    fn the_reason_names_what_is_missing() {
        let AfterClose::Stops(why) = after_close("softdog-x", SETTIMEOUT, Some(false)) else {
            panic!("no magic close, nowayout 0 must stop on close");
        };
        assert!(why.contains("softdog-x") && why.contains("WDIOF_MAGICCLOSE"), "{why}");
        assert!(why.contains("nowayout is 0"), "{why}");
        let AfterClose::Stops(why) = after_close("d", SETTIMEOUT, None) else { panic!() };
        assert!(why.contains("nowayout is unknown"), "{why}");
        assert!(UNGUARDED_ADVICE.contains("WITHOUT watchdog protection"));
        assert!(UNGUARDED_ADVICE.contains("nowayout=1") && UNGUARDED_ADVICE.contains("BMC"));
    }

    #[test]
    fn a_regular_file_or_directory_is_a_config_error_a_missing_device_is_not_available() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("watchdog");
        std::fs::write(&file, "").unwrap();
        let e = precheck(&file, 10).unwrap_err();
        assert!(e.config, "a regular file must be a configuration error: {e}");
        assert!(
            e.to_string().contains("a regular file") && e.to_string().contains("[watchdog] device"),
            "{e}"
        );
        let e = precheck(dir.path(), 10).unwrap_err();
        assert!(e.config && e.to_string().contains("a directory"), "{e}");
        let e = precheck(&dir.path().join("missing"), 10).unwrap_err();
        assert!(!e.config, "a missing device may appear (driver loaded later): {e}");
        assert!(e.to_string().contains("modprobe"), "{e}");
    }

    #[test]
    fn the_double_reads_its_test_only_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("wd");
        assert_eq!(double_driver(&fifo).unwrap().0 & MAGICCLOSE, MAGICCLOSE);
        std::fs::write(double_sidecar(&fifo), "magic_close = false\nnowayout = false\n").unwrap();
        let (options, nowayout) = double_driver(&fifo).unwrap();
        assert_eq!(options & MAGICCLOSE, 0);
        assert_eq!(nowayout, Some(false));
        std::fs::write(double_sidecar(&fifo), "magic_close = maybe\n").unwrap();
        let e = double_driver(&fifo).unwrap_err().to_string();
        assert!(e.contains("test-driver") && e.contains("magic_close = true|false"), "{e}");
    }
}
