//! Hardware watchdog driver (`/dev/watchdog`) and its FIFO test double.
//!
//! Opening a watchdog device arms it, so the daemon only *inspects* the device at start-up
//! (sysfs, /proc holders) and opens it after the first successful heartbeat.
//!
//! Test double (not for production): when the configured device is a FIFO, no ioctl is made;
//! each keepalive writes one byte `k`, a clean stop writes `V` before closing. The harness on
//! the other end emulates the timer.

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
}

impl fmt::Display for WatchdogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "watchdog {}: {}", self.device.display(), self.message)
    }
}

impl std::error::Error for WatchdogError {}

fn err(device: &Path, message: impl Into<String>) -> WatchdogError {
    WatchdogError { device: device.to_path_buf(), message: message.into() }
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

fn opened_for_writing(fdinfo: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(fdinfo) else { return true };
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
        return Err(err(
            path,
            "is not a watchdog device (neither a character device nor a FIFO test double)",
        ));
    };
    let mut info = DeviceInfo { holders: holders(path), ..DeviceInfo::default() };
    if kind == DeviceKind::Kernel {
        use std::os::unix::fs::MetadataExt;
        let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
        let legacy = major == 10 && minor == 130;
        let known = sysfs_dir(path);
        if known.is_none() && !legacy && Path::new("/sys/class/watchdog").is_dir() {
            return Err(err(
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
            info.sysfs = Some(dir);
        }
    }
    Ok((kind, info))
}

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
            return Err(err(
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
            return Err(err(
                path,
                format!(
                    "the driver's minimum timeout is {min} s, above watchdog_timeout {timeout_s} s"
                ),
            ));
        }
    }
    Ok(kind)
}

/// An armed watchdog.
pub struct Watchdog {
    file: Option<File>,
    path: PathBuf,
    kind: DeviceKind,
}

impl Watchdog {
    /// Opens (arms) the device and sets the timeout, verifying what the driver applied.
    pub fn arm(path: &Path, timeout_s: u32) -> Result<Watchdog, WatchdogError> {
        let (kind, _) = inspect(path)?;
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
                Ok(Watchdog { file: Some(file), path: path.to_path_buf(), kind })
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
                if let Err(e) = wd.configure(timeout_s) {
                    // Armed by the open: disarm before giving up, if the driver allows it.
                    wd.disarm();
                    return Err(e);
                }
                Ok(wd)
            }
        }
    }

    fn configure(&mut self, timeout_s: u32) -> Result<(), WatchdogError> {
        let path = self.path.clone();
        let Some(file) = &self.file else { return Err(err(&path, "not open")) };
        let info = sys::watchdog_get_support(file.as_fd()).map_err(|e| {
            err(&path, format!("WDIOC_GETSUPPORT failed: {e}: this is not a watchdog device; check [watchdog] device"))
        })?;
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
        if info.options & sys::wdiof::MAGICCLOSE == 0 {
            log::warn!(
                "watchdog {}: driver {} has no magic close: a clean stop cannot disarm it",
                path.display(),
                info.identity()
            );
        }
        Ok(())
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
    pub fn disarm(&mut self) {
        if let Some(mut file) = self.file.take() {
            if let Err(e) = file.write_all(b"V") {
                log::error!("watchdog {}: magic close failed: {e}", self.path.display());
            }
        }
    }

    /// Closes without the magic character: the timer keeps running and will fire.
    pub fn abandon(&mut self) {
        self.file.take();
    }
}
