//! FUSE fault injector for process-level integration tests.
//!
//! `FaultFs` mounts a flat passthrough filesystem over a backing directory. Other processes
//! (agent daemons) open files under the mountpoint with `O_DIRECT | O_DSYNC` and do aligned
//! `pread`/`pwrite`; the test flips per-file faults at any time through the handle.
//!
//! Every open is answered with `FOPEN_DIRECT_IO`, so the kernel never serves reads or absorbs
//! writes from the page cache: each read(2)/write(2) of a caller becomes exactly one request
//! here (for sizes up to `max_write`), and faults apply to buffered I/O as well.

// Each test crate includes this module and uses a different subset of it.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, FileTimes, Metadata, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::consts::FOPEN_DIRECT_IO;
use fuser::{
    BackgroundSession, FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow,
};

/// Fault applied to reads and writes of one file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Normal passthrough.
    #[default]
    None,
    /// Requests block until the fault is changed, then complete under the new fault.
    Freeze,
    /// Each request completes after the given delay.
    Delay(Duration),
    /// Reads and writes fail with `EIO`.
    Eio,
    /// Writes persist only their first 512 bytes but report full success; reads are normal.
    Torn,
    /// Reads return random bytes of the requested length; writes are normal.
    Garbage,
}

/// Per-file request counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Read requests answered (successfully or not).
    pub reads: u64,
    /// Write requests answered (successfully or not).
    pub writes: u64,
    /// Read/write requests answered with an error.
    pub failed: u64,
    /// Read/write requests currently held by `Fault::Freeze`.
    pub frozen_now: u64,
}

/// Bytes of a write that survive `Fault::Torn` (one legacy sector).
const TORN_KEEP: usize = 512;
/// Attributes and entries are never cached: tests also modify backing files directly.
const TTL: Duration = Duration::ZERO;
const ROOT_INO: u64 = fuser::FUSE_ROOT_ID;
/// How long `drop` waits for released requests to be answered.
const RELEASE_GRACE: Duration = Duration::from_secs(5);
/// How long `drop` waits for the session thread; it only exits once the last open file on
/// the detached mount is closed, which an agent that is still running may never do.
const SESSION_GRACE: Duration = Duration::from_secs(1);

/// Handle on a mounted fault-injecting filesystem.
///
/// Dropping it fails parked requests with `EIO`, unmounts lazily (the path disappears from
/// /proc/self/mountinfo before `drop` returns) and makes every later read/write on files that
/// processes still hold open fail with `EIO`, so the backing files no longer change.
pub struct FaultFs {
    mountpoint: PathBuf,
    shared: Arc<Shared>,
    session: Option<BackgroundSession>,
    /// `st_dev` of the mount: names the connection under /sys/fs/fuse/connections.
    conn_dev: u64,
}

impl FaultFs {
    /// Mounts a passthrough view of `backing_dir` at `mountpoint` (created if missing).
    ///
    /// A FUSE mount already sitting on `mountpoint` (left by a crashed run) is lazily
    /// unmounted first.
    pub fn mount(backing_dir: &Path, mountpoint: &Path) -> io::Result<FaultFs> {
        let backing = backing_dir.canonicalize()?;
        let target = absolute_without_stat(mountpoint)?;
        clear_stale_mount(&target)?;
        std::fs::create_dir_all(&target)?;
        let mountpoint = target.canonicalize()?;

        let shared = Arc::new(Shared::default());
        let base = [
            MountOption::FSName("faultfs".to_string()),
            MountOption::Subtype("faultfs".to_string()),
            // Without allow_other the kernel refuses every uid but the mounter's, and
            // fusermount3 needs it for auto_unmount.
            MountOption::AllowOther,
        ];
        // AutoUnmount makes fusermount3 unmount when this process dies without running Drop;
        // it needs the fusermount3 helper, so fall back to a plain mount without it.
        let with_auto: Vec<MountOption> =
            base.iter().cloned().chain([MountOption::AutoUnmount]).collect();
        let session = match fuser::spawn_mount2(
            PassFs::new(backing.clone(), shared.clone()),
            &mountpoint,
            &with_auto,
        ) {
            Ok(session) => session,
            Err(_) => {
                fuser::spawn_mount2(PassFs::new(backing, shared.clone()), &mountpoint, &base)?
            }
        };
        let conn_dev = std::fs::metadata(&mountpoint).map(|m| m.dev()).unwrap_or(0);
        Ok(FaultFs { mountpoint, shared, session: Some(session), conn_dev })
    }

    /// Canonical path of the mount root.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Sets the fault for reads and writes of `file_name` (a name in the mount root).
    /// Takes effect for requests already frozen as well as new ones.
    pub fn set_fault(&self, file_name: &str, fault: Fault) {
        let mut st = self.shared.lock();
        if fault == Fault::None {
            st.faults.remove(file_name);
        } else {
            st.faults.insert(file_name.to_string(), fault);
        }
        drop(st);
        self.shared.cv.notify_all();
    }

    /// Equivalent to `set_fault(file_name, Fault::None)`.
    pub fn clear_fault(&self, file_name: &str) {
        self.set_fault(file_name, Fault::None);
    }

    /// Counters for `file_name` since mount.
    pub fn stats(&self, file_name: &str) -> OpStats {
        self.shared.lock().stats.get(file_name).copied().unwrap_or_default()
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        // Release parked requests first (they fail with EIO and never touch the backing
        // file afterwards), so no caller is left blocked on a connection about to vanish.
        let mut st = self.shared.lock();
        st.shutdown = true;
        self.shared.cv.notify_all();
        let deadline = Instant::now() + RELEASE_GRACE;
        while st.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self.shared.cv.wait_timeout(st, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        drop(st);

        // Lazy unmount takes the path out of the namespace synchronously even while other
        // processes still hold files open (a plain umount would fail with EBUSY, and the
        // auto-unmount helper acts asynchronously).
        lazy_unmount(&self.mountpoint);
        let Some(session) = self.session.take() else { return };
        // Dropping the rest of the session drops fuser's mount guard.
        let guard = {
            let session = session;
            session.guard
        };
        // The session loop ends when the kernel tears the connection down, i.e. once the last
        // open file on the detached mount is closed. If an agent still holds one, abort the
        // connection; if that is impossible, leave the thread detached rather than hang.
        let deadline = Instant::now() + SESSION_GRACE;
        let mut aborted = false;
        while !guard.is_finished() && Instant::now() < deadline {
            if !aborted {
                aborted = abort_connection(self.conn_dev);
            }
            thread::sleep(Duration::from_millis(10));
        }
        if guard.is_finished() {
            let _ = guard.join();
        }
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled on fault changes, shutdown and worker exit.
    cv: Condvar,
}

#[derive(Default)]
struct State {
    faults: HashMap<String, Fault>,
    stats: HashMap<String, OpStats>,
    shutdown: bool,
    /// Worker threads holding a reply.
    in_flight: usize,
}

impl State {
    fn fault(&self, name: &str) -> Fault {
        self.faults.get(name).copied().unwrap_or_default()
    }

    fn stats_mut(&mut self, name: &str) -> &mut OpStats {
        self.stats.entry(name.to_string()).or_default()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not turn Drop into a second panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits out `Freeze` and `Delay` for a request on `name` (off the session thread) and
    /// returns the fault the request must then be completed with.
    fn settle(&self, name: &str) -> Fault {
        let mut st = self.lock();
        let mut delayed = false;
        loop {
            if st.shutdown {
                return Fault::Eio;
            }
            match st.fault(name) {
                Fault::Freeze => {
                    st.stats_mut(name).frozen_now += 1;
                    st = self.cv.wait(st).unwrap_or_else(PoisonError::into_inner);
                    st.stats_mut(name).frozen_now -= 1;
                }
                Fault::Delay(d) if !delayed => {
                    delayed = true;
                    let deadline = Instant::now() + d;
                    loop {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() || st.shutdown {
                            break;
                        }
                        st = self
                            .cv
                            .wait_timeout(st, left)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                }
                Fault::Delay(_) => return Fault::None,
                other => return other,
            }
        }
    }

    fn count(&self, name: &str, write: bool, failed: bool) {
        let mut st = self.lock();
        let s = st.stats_mut(name);
        if write {
            s.writes += 1;
        } else {
            s.reads += 1;
        }
        if failed {
            s.failed += 1;
        }
    }
}

enum Io {
    Read { size: u32, reply: ReplyData },
    Write { data: Vec<u8>, reply: ReplyWrite },
}

/// One read or write, detached from the session loop so it can be parked.
struct Job {
    name: String,
    file: Arc<File>,
    offset: u64,
    io: Io,
}

impl Job {
    fn complete(self, shared: &Shared, fault: Fault) {
        let Job { name, file, offset, io } = self;
        match io {
            Io::Read { size, reply } => {
                let res = match fault {
                    Fault::Eio => Err(libc::EIO),
                    Fault::Garbage => {
                        let mut buf = vec![0; size as usize];
                        fill_random(&mut buf);
                        Ok(buf)
                    }
                    _ => read_full(&file, offset, size as usize).map_err(errno),
                };
                shared.count(&name, false, res.is_err());
                match res {
                    Ok(buf) => reply.data(&buf),
                    Err(e) => reply.error(e),
                }
            }
            Io::Write { data, reply } => {
                let res = match fault {
                    Fault::Eio => Err(libc::EIO),
                    Fault::Torn => {
                        file.write_all_at(&data[..data.len().min(TORN_KEEP)], offset).map_err(errno)
                    }
                    _ => file.write_all_at(&data, offset).map_err(errno),
                };
                shared.count(&name, true, res.is_err());
                match res {
                    // Torn writes claim the full length, like a drive that lost the tail.
                    Ok(()) => reply.written(data.len() as u32),
                    Err(e) => reply.error(e),
                }
            }
        }
    }
}

fn read_full(file: &File, offset: u64, size: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; size];
    let mut done = 0;
    while done < size {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// Non-cryptographic noise (xorshift64 seeded from std's per-instance random hasher keys).
fn fill_random(buf: &mut [u8]) {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos());
    let mut x = hasher.finish() | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

fn errno(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

struct Handle {
    /// Name at open time: faults follow the name the caller opened.
    name: String,
    file: Arc<File>,
}

/// The filesystem run by fuser's (single-threaded) session loop.
struct PassFs {
    backing: PathBuf,
    shared: Arc<Shared>,
    inos: HashMap<String, u64>,
    names: HashMap<u64, String>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
}

impl PassFs {
    fn new(backing: PathBuf, shared: Arc<Shared>) -> Self {
        PassFs {
            backing,
            shared,
            inos: HashMap::new(),
            names: HashMap::new(),
            next_ino: ROOT_INO + 1,
            handles: HashMap::new(),
            next_fh: 1,
        }
    }

    fn ino_for(&mut self, name: &str) -> u64 {
        if let Some(&ino) = self.inos.get(name) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inos.insert(name.to_string(), ino);
        self.names.insert(ino, name.to_string());
        ino
    }

    /// Backing path of a file in the root directory.
    fn child(&self, parent: u64, name: &OsStr) -> Result<(String, PathBuf), i32> {
        if parent != ROOT_INO {
            return Err(libc::ENOENT);
        }
        let name = name.to_str().ok_or(libc::EINVAL)?;
        Ok((name.to_string(), self.backing.join(name)))
    }

    fn path_of(&self, ino: u64) -> Result<PathBuf, i32> {
        self.names.get(&ino).map(|n| self.backing.join(n)).ok_or(libc::ENOENT)
    }

    fn add_handle(&mut self, name: String, file: File) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { name, file: Arc::new(file) });
        fh
    }

    /// Completes inline unless the request has to wait; then a worker thread owns the reply
    /// so the session loop keeps serving other requests.
    fn submit(&mut self, fh: u64, offset: i64, io: Io) {
        let Some(handle) = self.handles.get(&fh) else {
            match io {
                Io::Read { reply, .. } => reply.error(libc::EBADF),
                Io::Write { reply, .. } => reply.error(libc::EBADF),
            }
            return;
        };
        let job = Job {
            name: handle.name.clone(),
            file: handle.file.clone(),
            offset: u64::try_from(offset).unwrap_or(0),
            io,
        };
        let mut st = self.shared.lock();
        let fault = st.fault(&job.name);
        if !matches!(fault, Fault::Freeze | Fault::Delay(_)) && !st.shutdown {
            drop(st);
            job.complete(&self.shared, fault);
            return;
        }
        st.in_flight += 1;
        drop(st);
        let shared = self.shared.clone();
        thread::spawn(move || {
            let fault = shared.settle(&job.name);
            job.complete(&shared, fault);
            shared.lock().in_flight -= 1;
            shared.cv.notify_all();
        });
    }
}

fn attr_of(ino: u64, md: &Metadata) -> FileAttr {
    let time = |secs: i64, nsecs: i64| {
        let d = Duration::new(u64::try_from(secs).unwrap_or(0), u32::try_from(nsecs).unwrap_or(0));
        UNIX_EPOCH + d
    };
    FileAttr {
        ino,
        size: md.len(),
        blocks: md.blocks(),
        atime: time(md.atime(), md.atime_nsec()),
        mtime: time(md.mtime(), md.mtime_nsec()),
        ctime: time(md.ctime(), md.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: if md.is_dir() { FileType::Directory } else { FileType::RegularFile },
        perm: (md.mode() & 0o7777) as u16,
        nlink: md.nlink() as u32,
        uid: md.uid(),
        gid: md.gid(),
        rdev: 0,
        blksize: md.blksize() as u32,
        flags: 0,
    }
}

fn open_options(flags: i32) -> OpenOptions {
    let mut opts = OpenOptions::new();
    // O_DIRECT/O_DSYNC are deliberately not forwarded: the backing file only has to hold the
    // bytes, and the backing filesystem (e.g. tmpfs) might reject O_DIRECT.
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => opts.read(true),
        libc::O_WRONLY => opts.write(true),
        _ => opts.read(true).write(true),
    };
    opts
}

fn to_system_time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for PassFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let (name, path) = match self.child(parent, name) {
            Ok(v) => v,
            Err(e) => return reply.error(e),
        };
        match std::fs::metadata(&path) {
            Ok(md) if md.is_file() => {
                let ino = self.ino_for(&name);
                reply.entry(&TTL, &attr_of(ino, &md), 0);
            }
            Ok(_) => reply.error(libc::ENOENT),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, fh: Option<u64>, reply: ReplyAttr) {
        let md = if ino == ROOT_INO {
            std::fs::metadata(&self.backing)
        } else if let Some(h) = fh.and_then(|fh| self.handles.get(&fh)) {
            h.file.metadata()
        } else {
            match self.path_of(ino) {
                Ok(path) => std::fs::metadata(path),
                Err(e) => return reply.error(e),
            }
        };
        match md {
            Ok(md) => reply.attr(&TTL, &attr_of(ino, &md)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        if ino == ROOT_INO {
            return reply.error(libc::EPERM);
        }
        let file = match fh.and_then(|fh| self.handles.get(&fh)) {
            Some(h) => h.file.clone(),
            None => {
                let path = match self.path_of(ino) {
                    Ok(p) => p,
                    Err(e) => return reply.error(e),
                };
                match OpenOptions::new().read(size.is_none()).write(size.is_some()).open(path) {
                    Ok(f) => Arc::new(f),
                    Err(e) => return reply.error(errno(e)),
                }
            }
        };
        let res = (|| {
            if let Some(size) = size {
                file.set_len(size)?;
            }
            if let Some(mode) = mode {
                file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::fchown(&*file, uid, gid)?;
            }
            let mut times = FileTimes::new();
            if let Some(t) = atime {
                times = times.set_accessed(to_system_time(t));
            }
            if let Some(t) = mtime {
                times = times.set_modified(to_system_time(t));
            }
            if atime.is_some() || mtime.is_some() {
                file.set_times(times)?;
            }
            file.metadata()
        })();
        match res {
            Ok(md) => reply.attr(&TTL, &attr_of(ino, &md)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let (name, path) = match self.child(parent, name) {
            Ok(v) => v,
            Err(e) => return reply.error(e),
        };
        match std::fs::remove_file(path) {
            Ok(()) => {
                // A re-created file must get a fresh inode number.
                if let Some(ino) = self.inos.remove(&name) {
                    self.names.remove(&ino);
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let Some(name) = self.names.get(&ino).cloned() else {
            return reply.error(libc::ENOENT);
        };
        match open_options(flags).open(self.backing.join(&name)) {
            Ok(file) => {
                let fh = self.add_handle(name, file);
                reply.opened(fh, FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (name, path) = match self.child(parent, name) {
            Ok(v) => v,
            Err(e) => return reply.error(e),
        };
        let mut opts = open_options(flags);
        if flags & libc::O_EXCL != 0 {
            opts.create_new(true);
        } else {
            opts.create(true);
        }
        if flags & libc::O_TRUNC != 0 {
            opts.truncate(true);
        }
        opts.mode(mode & !umask & 0o7777);
        let res = opts.open(path).and_then(|f| f.metadata().map(|md| (f, md)));
        match res {
            Ok((file, md)) => {
                let ino = self.ino_for(&name);
                let fh = self.add_handle(name, file);
                reply.created(&TTL, &attr_of(ino, &md), 0, fh, FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        self.submit(fh, offset, Io::Read { size, reply });
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        self.submit(fh, offset, Io::Write { data: data.to_vec(), reply });
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lo: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Parked jobs keep their own Arc<File>.
        self.handles.remove(&fh);
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, _ino: u64, fh: u64, datasync: bool, reply: ReplyEmpty) {
        let Some(h) = self.handles.get(&fh) else { return reply.error(libc::EBADF) };
        let res = if datasync { h.file.sync_data() } else { h.file.sync_all() };
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let Some(h) = self.handles.get(&fh) else { return reply.error(libc::EBADF) };
        let flags = nix::fcntl::FallocateFlags::from_bits_truncate(mode);
        match nix::fcntl::fallocate(h.file.as_raw_fd(), flags, offset, length) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e as i32),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT_INO {
            return reply.error(libc::ENOTDIR);
        }
        let mut files: Vec<String> = match std::fs::read_dir(&self.backing) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(e) => return reply.error(errno(e)),
        };
        // Stable order so that offsets stay meaningful across calls.
        files.sort();
        let mut entries = vec![
            (ROOT_INO, FileType::Directory, ".".to_string()),
            (ROOT_INO, FileType::Directory, "..".to_string()),
        ];
        for name in files {
            let ino = self.ino_for(&name);
            entries.push((ino, FileType::RegularFile, name));
        }
        let skip = usize::try_from(offset).unwrap_or(0);
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(skip) {
            if reply.add(ino, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        match nix::sys::statvfs::statvfs(&self.backing) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(e as i32),
        }
    }
}

/// Absolute form of `path` without stat'ing `path` itself (a stale FUSE mount answers
/// ENOTCONN, so `canonicalize` fails on exactly the paths we need to clean up).
fn absolute_without_stat(path: &Path) -> io::Result<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Ok(p);
    }
    let abs = std::path::absolute(path)?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(parent.canonicalize()?.join(name)),
        _ => Ok(abs),
    }
}

/// Number of FUSE mounts stacked on `path` in this mount namespace.
fn fuse_mounts_at(path: &Path) -> usize {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return 0 };
    let want = path.as_os_str().as_encoded_bytes();
    info.lines()
        .filter(|line| {
            let mut halves = line.splitn(2, " - ");
            let (Some(pre), Some(post)) = (halves.next(), halves.next()) else { return false };
            let mnt = pre.split(' ').nth(4).map(unescape_mountinfo).unwrap_or_default();
            let fstype = post.split(' ').next().unwrap_or("");
            mnt == want && (fstype == "fuse" || fstype.starts_with("fuse."))
        })
        .count()
}

/// Whether a FUSE filesystem is mounted exactly at `path` (checked via /proc/self/mountinfo).
pub fn is_fuse_mounted(path: &Path) -> bool {
    fuse_mounts_at(path) > 0
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn clear_stale_mount(path: &Path) -> io::Result<()> {
    for _ in 0..4 {
        if !is_fuse_mounted(path) {
            return Ok(());
        }
        lazy_unmount(path);
    }
    if is_fuse_mounted(path) {
        return Err(io::Error::other(format!("cannot unmount stale FUSE mount at {path:?}")));
    }
    Ok(())
}

/// Detaches the mount at `path`; best effort, no error if nothing is mounted.
fn lazy_unmount(path: &Path) {
    let attempts: [(&str, &[&str]); 3] = [
        ("fusermount3", &["-u", "-z", "-q", "--"]),
        ("fusermount", &["-u", "-z", "-q", "--"]),
        ("umount", &["-l", "--"]),
    ];
    for (bin, args) in attempts {
        if !is_fuse_mounted(path) {
            return;
        }
        let _ = Command::new(bin)
            .args(args)
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Aborts the FUSE connection through fusectl, failing all its pending and future requests.
/// Returns whether the abort file was written (fusectl may not be mounted).
fn abort_connection(dev: u64) -> bool {
    // Anonymous superblocks have major 0, so the connection directory is named by the minor.
    if dev == 0 || libc::major(dev) != 0 {
        return false;
    }
    let path = format!("/sys/fs/fuse/connections/{}/abort", libc::minor(dev));
    std::fs::write(path, b"1").is_ok()
}
