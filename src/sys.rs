//! Every `unsafe` block, ioctl and raw syscall of hbfence lives here, each with the invariant
//! that makes it sound. The rest of the crate is safe Rust.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

// <linux/fs.h>
nix::ioctl_read_bad!(ioctl_blksszget, 0x1268, libc::c_int);
nix::ioctl_read!(ioctl_blkgetsize64, 0x12, 114, u64);
nix::ioctl_read_bad!(ioctl_blkroget, 0x125e, libc::c_int);

/// `struct watchdog_info` from <linux/watchdog.h>.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WatchdogInfo {
    pub options: u32,
    pub firmware_version: u32,
    pub identity: [u8; 32],
}

impl WatchdogInfo {
    pub fn identity(&self) -> String {
        let end = self.identity.iter().position(|&c| c == 0).unwrap_or(32);
        String::from_utf8_lossy(&self.identity[..end]).into_owned()
    }
}

/// Watchdog option bits (WDIOF_*).
pub mod wdiof {
    pub const SETTIMEOUT: u32 = 0x0080;
    pub const MAGICCLOSE: u32 = 0x0100;
    pub const KEEPALIVEPING: u32 = 0x8000;
}

pub const WDIOS_DISABLECARD: libc::c_int = 0x0001;

const WATCHDOG_IOCTL_BASE: u8 = b'W';
nix::ioctl_read!(ioctl_wd_getsupport, WATCHDOG_IOCTL_BASE, 0, WatchdogInfo);
nix::ioctl_read!(ioctl_wd_getbootstatus, WATCHDOG_IOCTL_BASE, 2, libc::c_int);
nix::ioctl_read!(ioctl_wd_setoptions, WATCHDOG_IOCTL_BASE, 4, libc::c_int);
nix::ioctl_read!(ioctl_wd_keepalive, WATCHDOG_IOCTL_BASE, 5, libc::c_int);
nix::ioctl_readwrite!(ioctl_wd_settimeout, WATCHDOG_IOCTL_BASE, 6, libc::c_int);
nix::ioctl_read!(ioctl_wd_gettimeout, WATCHDOG_IOCTL_BASE, 7, libc::c_int);
nix::ioctl_read!(ioctl_wd_gettimeleft, WATCHDOG_IOCTL_BASE, 10, libc::c_int);

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Logical sector size of a block device (BLKSSZGET).
pub fn block_logical_size(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one c_int through the pointer, which points to a live local;
    // the fd is borrowed, so it stays open for the duration of the call.
    unsafe { ioctl_blksszget(fd.as_raw_fd(), &mut size) }.map_err(errno)?;
    u32::try_from(size).map_err(|_| io::Error::other("negative sector size"))
}

/// Whether a block device is read-only (BLKROGET).
pub fn block_read_only(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut ro: libc::c_int = 0;
    // SAFETY: BLKROGET writes one c_int through the pointer, which points to a live local;
    // the fd is borrowed and open.
    unsafe { ioctl_blkroget(fd.as_raw_fd(), &mut ro) }.map_err(errno)?;
    Ok(ro != 0)
}

/// Size in bytes of a block device (BLKGETSIZE64).
pub fn block_device_bytes(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to a live local;
    // the fd is borrowed and open.
    unsafe { ioctl_blkgetsize64(fd.as_raw_fd(), &mut size) }.map_err(errno)?;
    Ok(size)
}

pub fn watchdog_get_support(fd: BorrowedFd<'_>) -> io::Result<WatchdogInfo> {
    let mut info = WatchdogInfo { options: 0, firmware_version: 0, identity: [0; 32] };
    // SAFETY: WDIOC_GETSUPPORT fills one `struct watchdog_info`, whose layout WatchdogInfo
    // mirrors with repr(C); the pointer is to a live local and the fd is open.
    unsafe { ioctl_wd_getsupport(fd.as_raw_fd(), &mut info) }.map_err(errno)?;
    Ok(info)
}

/// Sets the timeout and returns the value the driver actually applied.
pub fn watchdog_set_timeout(fd: BorrowedFd<'_>, secs: u32) -> io::Result<u32> {
    let mut value =
        libc::c_int::try_from(secs).map_err(|_| io::Error::other("timeout too large"))?;
    // SAFETY: WDIOC_SETTIMEOUT reads and writes back one c_int through a pointer to a live
    // local; the fd is open.
    unsafe { ioctl_wd_settimeout(fd.as_raw_fd(), &mut value) }.map_err(errno)?;
    Ok(value.max(0) as u32)
}

pub fn watchdog_get_timeout(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    // SAFETY: WDIOC_GETTIMEOUT writes one c_int through a pointer to a live local; fd open.
    unsafe { ioctl_wd_gettimeout(fd.as_raw_fd(), &mut value) }.map_err(errno)?;
    Ok(value.max(0) as u32)
}

pub fn watchdog_get_timeleft(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    // SAFETY: WDIOC_GETTIMELEFT writes one c_int through a pointer to a live local; fd open.
    unsafe { ioctl_wd_gettimeleft(fd.as_raw_fd(), &mut value) }.map_err(errno)?;
    Ok(value.max(0) as u32)
}

pub fn watchdog_get_bootstatus(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    // SAFETY: WDIOC_GETBOOTSTATUS writes one c_int through a pointer to a live local; fd open.
    unsafe { ioctl_wd_getbootstatus(fd.as_raw_fd(), &mut value) }.map_err(errno)?;
    Ok(value.max(0) as u32)
}

pub fn watchdog_keepalive(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut dummy: libc::c_int = 0;
    // SAFETY: WDIOC_KEEPALIVE may write one c_int through the pointer, a live local; fd open.
    unsafe { ioctl_wd_keepalive(fd.as_raw_fd(), &mut dummy) }.map_err(errno)?;
    Ok(())
}

/// Stops the timer (WDIOS_DISABLECARD); used by `test-watchdog` right after an unavoidable arm.
pub fn watchdog_disable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut opt: libc::c_int = WDIOS_DISABLECARD;
    // SAFETY: WDIOC_SETOPTIONS reads one c_int through a pointer to a live local; fd open.
    unsafe { ioctl_wd_setoptions(fd.as_raw_fd(), &mut opt) }.map_err(errno)?;
    Ok(())
}

/// Locks current and future pages in memory so the heartbeat never waits on page-in.
pub fn lock_all_memory() -> io::Result<()> {
    use nix::sys::mman::{mlockall, MlockAllFlags};
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).map_err(errno)
}

/// SCHED_RR at `priority` for the calling thread. SCHED_RESET_ON_FORK: threads and child
/// processes (ipmitool, hooks) it creates run with normal scheduling.
pub fn set_realtime(priority: i32) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: sched_setscheduler reads one sched_param from a pointer to a live local; pid 0
    // means the calling thread, which exists.
    let rc =
        unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CLOCK_MONOTONIC in milliseconds (stops while the machine is suspended: not for decisions).
pub fn monotonic_ms() -> u64 {
    clock_ms(nix::time::ClockId::CLOCK_MONOTONIC)
}

/// CLOCK_BOOTTIME in milliseconds: the clock of every decision (S2, S3). It is monotonic and,
/// unlike CLOCK_MONOTONIC, keeps counting through suspend, so a host that slept past its lease
/// sees the lease expired the moment it resumes and self-fences instead of petting on.
pub fn boottime_ms() -> u64 {
    clock_ms(nix::time::ClockId::CLOCK_BOOTTIME)
}

/// What the clocks read once one read has failed: a time far beyond every lease, so the core
/// dooms the host at once (S3) instead of seeing time stand still and renewing nothing but
/// petting on. Far from `u64::MAX`, so deadlines computed from it do not overflow.
pub const CLOCK_FAILED_MS: u64 = u64::MAX / 4;

/// Remembers whether a clock read ever failed.
struct ClockLatch(std::sync::atomic::AtomicBool);

static CLOCKS: ClockLatch = ClockLatch(std::sync::atomic::AtomicBool::new(false));

fn clock_ms(id: nix::time::ClockId) -> u64 {
    CLOCKS.ms(nix::time::clock_gettime(id).map(|ts| (ts.tv_sec(), ts.tv_nsec())))
}

impl ClockLatch {
    /// Milliseconds from a clock read; after any failed read, [`CLOCK_FAILED_MS`] for good:
    /// time that went back after the failure could let a lease look valid again.
    fn ms(&self, read: nix::Result<(i64, i64)>) -> u64 {
        use std::sync::atomic::Ordering;
        match read {
            Ok((sec, nsec)) if !self.0.load(Ordering::Relaxed) => {
                (sec.max(0) as u64).saturating_mul(1000) + (nsec.max(0) as u64) / 1_000_000
            }
            Ok(_) => CLOCK_FAILED_MS,
            Err(e) => {
                if !self.0.swap(true, Ordering::Relaxed) {
                    log::error!("clock_gettime failed ({e}): treating every lease as expired");
                }
                CLOCK_FAILED_MS
            }
        }
    }
}

/// Wall clock in Unix milliseconds (for people only, S2).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Random bytes from the kernel (getrandom, no file descriptor needed).
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`, a live mutable slice.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if random_bytes(&mut b).is_err() {
        // Fall back to time-derived entropy; uniqueness, not secrecy, is what matters here.
        let t = monotonic_ms() ^ wall_ms().rotate_left(17) ^ u64::from(std::process::id());
        return t.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    u64::from_le_bytes(b)
}

/// Stack size of hbfence's own threads: with mlockall(MCL_FUTURE) every stack is resident, so
/// keep them small: they decode blocks, format JSON and spawn children, all on the heap.
/// 7 threads at 256 KiB were 1.8 MiB of the daemon's RSS (issue 12).
pub const THREAD_STACK: usize = 64 * 1024;

/// One malloc arena for the whole process: with mlockall every per-thread arena (64 MiB of
/// address space each) would be locked, for no benefit in a daemon that allocates little.
pub fn single_malloc_arena() {
    // SAFETY: mallopt only changes glibc allocator tuning; M_ARENA_MAX with a positive value is
    // documented as safe to set at any time (it is called before any thread is spawned).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: a failed clock read froze time at 0 for the lease; now it is far beyond every
    /// lease, and stays so even when the clock reads again.
    #[test]
    fn a_failed_clock_read_is_far_future_for_good() {
        let latch = ClockLatch(std::sync::atomic::AtomicBool::new(false));
        assert_eq!(latch.ms(Ok((5, 2_000_000))), 5002);
        assert_eq!(latch.ms(Err(nix::errno::Errno::EINVAL)), CLOCK_FAILED_MS);
        assert_eq!(latch.ms(Ok((6, 0))), CLOCK_FAILED_MS);
    }
}
