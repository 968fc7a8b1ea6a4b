//! Heartbeat volume driver: O_DIRECT block I/O on a file (NFS, ext4, tmpfs) or a block device.
//!
//! Errors name the path and the operation and are never retried here: whether a failure
//! matters is the decision core's business.

use crate::core::format::{self, Decoded, Geometry, Header, BLOCK_SIZE};
use crate::sys;
use memmap2::MmapMut;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A page-aligned buffer (anonymous mapping), as O_DIRECT requires.
pub struct AlignedBuf {
    map: MmapMut,
}

impl AlignedBuf {
    /// A zeroed buffer of `blocks` whole blocks.
    pub fn new(blocks: usize) -> io::Result<AlignedBuf> {
        Ok(AlignedBuf { map: MmapMut::map_anon(blocks.max(1) * BLOCK_SIZE)? })
    }
    pub fn blocks(&self) -> usize {
        self.map.len() / BLOCK_SIZE
    }
    /// Holds at least `blocks` blocks afterwards: replaced by a larger buffer if smaller (its
    /// contents are not kept).
    pub fn fit(&mut self, blocks: usize) -> io::Result<()> {
        if self.blocks() < blocks {
            *self = AlignedBuf::new(blocks)?;
        }
        Ok(())
    }
    pub fn block(&self, i: usize) -> &[u8] {
        self.block_range(i, i + 1)
    }
    /// Blocks `first..end` as one slice: the buffer is contiguous.
    pub fn block_range(&self, first: usize, end: usize) -> &[u8] {
        &self.map[first * BLOCK_SIZE..end * BLOCK_SIZE]
    }
    pub fn block_mut(&mut self, i: usize) -> &mut [u8; BLOCK_SIZE] {
        let s = &mut self.map[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE];
        s.try_into().expect("slice of exactly BLOCK_SIZE")
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.map
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    File,
    BlockDevice,
}

#[derive(Debug)]
pub enum VolumeError {
    Io {
        path: PathBuf,
        op: String,
        source: io::Error,
    },
    /// The path cannot hold a volume (directory, socket, bad size...).
    Unusable {
        path: PathBuf,
        reason: String,
    },
    /// The header is missing, corrupt or unreadable by this version.
    BadHeader {
        path: PathBuf,
        state: Box<Decoded>,
    },
    /// Block 0 is not a header but host blocks of one cluster are intact: a live volume whose
    /// header was damaged, to be restored, not re-created.
    DamagedHeader {
        path: PathBuf,
        state: Box<Decoded>,
        cluster: format::ClusterId,
        intact: u64,
    },
}

impl VolumeError {
    fn io(path: &Path, op: impl Into<String>, source: io::Error) -> VolumeError {
        VolumeError::Io { path: path.to_path_buf(), op: op.into(), source }
    }
    fn unusable(path: &Path, reason: impl Into<String>) -> VolumeError {
        VolumeError::Unusable { path: path.to_path_buf(), reason: reason.into() }
    }
}

fn advice(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOENT) => " (no such file: check the path, or create the volume with `hbfence init`)",
        Some(libc::EACCES) | Some(libc::EPERM) => " (permission denied: run as root, check mode and mount options)",
        Some(libc::EROFS) => " (read-only: the volume must be writable; check the mount or device)",
        Some(libc::EINVAL) => " (the filesystem or device rejected O_DIRECT or an unaligned request; hbfence needs a filesystem with O_DIRECT support: NFS, ext4, xfs, tmpfs, or a block device)",
        Some(libc::EIO) => " (I/O error from the storage)",
        Some(libc::EISDIR) => " (a directory: give the path of a file or block device)",
        _ => "",
    }
}

impl fmt::Display for VolumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeError::Io { path, op, source } => {
                write!(f, "{}: {op} failed: {source}{}", path.display(), advice(source))
            }
            VolumeError::Unusable { path, reason } => write!(f, "{}: {reason}", path.display()),
            VolumeError::BadHeader { path, state } => {
                let what = match state.as_ref() {
                    Decoded::Empty => "the header block is empty: not initialized (run `hbfence init --volume PATH`)".to_string(),
                    Decoded::Foreign => "not an hbfence volume (wrong magic: data of another program?)".to_string(),
                    Decoded::BadCrc => "header checksum failure (CRC mismatch): the header is corrupt; re-create the volume with `hbfence init --force` once no host uses it".to_string(),
                    Decoded::Unsupported { version } if *version < format::FORMAT_VERSION => format!("format version {version} was written by an older hbfence; this one reads format {}: stop the agents of every host, re-initialise the volume with `hbfence init --force` (same timing options), then start them again", format::FORMAT_VERSION),
                    Decoded::Unsupported { version } => format!("format version {version} is newer than this hbfence supports (version {}); upgrade hbfence", format::FORMAT_VERSION),
                    Decoded::Malformed(why) => format!("header is invalid: {why}"),
                    Decoded::Heartbeat(_)
        | Decoded::Mailbox(_)
        | Decoded::VerdictPage(_)
        | Decoded::Inventory(_) => "block 0 is not a header block: not an hbfence volume".to_string(),
                    Decoded::Header(_) => "header is valid".to_string(),
                };
                write!(f, "{}: {what}", path.display())
            }
            VolumeError::DamagedHeader { path, state, cluster, intact } => write!(
                f,
                "{}: the header (block 0) is damaged ({}), but {intact} host block(s) of cluster {} are intact: this volume is in use, do not re-create it. Restore the header with `hbfence restore-header` (the running agents print the exact command in their volume_header_damaged event and log); this agent retries its start",
                path.display(),
                state.crc_state(),
                format::uuid_string(cluster)
            ),
        }
    }
}

impl std::error::Error for VolumeError {}

/// An open heartbeat volume.
pub struct Volume {
    file: File,
    path: PathBuf,
    kind: VolumeKind,
    size_bytes: u64,
}

impl Volume {
    /// An I/O error of this volume's, for an operation outside `Volume` (`op` says what).
    pub fn error(&self, op: &str, source: io::Error) -> VolumeError {
        VolumeError::io(&self.path, op, source)
    }

    /// Opens an existing file or block device with O_DIRECT (and O_DSYNC when writable).
    pub fn open(path: &Path, access: Access) -> Result<Volume, VolumeError> {
        let meta = std::fs::metadata(path).map_err(|e| VolumeError::io(path, "stat", e))?;
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            VolumeKind::File
        } else if ft.is_block_device() {
            VolumeKind::BlockDevice
        } else if ft.is_dir() {
            return Err(VolumeError::unusable(
                path,
                "is a directory: give the path of a volume file or block device",
            ));
        } else {
            return Err(VolumeError::unusable(
                path,
                "is neither a regular file nor a block device",
            ));
        };
        let mut opts = OpenOptions::new();
        opts.read(true);
        let mut flags = libc::O_DIRECT | libc::O_CLOEXEC;
        if access == Access::ReadWrite {
            opts.write(true);
            flags |= libc::O_DSYNC;
        }
        opts.custom_flags(flags);
        let op = if access == Access::ReadWrite {
            "open for writing (O_DIRECT|O_DSYNC)"
        } else {
            "open (O_DIRECT)"
        };
        let file = opts.open(path).map_err(|e| VolumeError::io(path, op, e))?;
        let size_bytes = match kind {
            VolumeKind::File => meta.len(),
            VolumeKind::BlockDevice => {
                let sector = sys::block_logical_size(file.as_fd())
                    .map_err(|e| VolumeError::io(path, "BLKSSZGET", e))?;
                if sector as usize > BLOCK_SIZE {
                    return Err(VolumeError::unusable(
                        path,
                        format!("logical block size {sector} is above 4096; hbfence writes 4096-byte blocks and cannot use this device"),
                    ));
                }
                if access == Access::ReadWrite
                    && sys::block_read_only(file.as_fd()).unwrap_or(false)
                {
                    return Err(VolumeError::unusable(
                        path,
                        "is a read-only block device: the volume must be writable (check the device, multipath or iSCSI settings)",
                    ));
                }
                sys::block_device_bytes(file.as_fd())
                    .map_err(|e| VolumeError::io(path, "BLKGETSIZE64", e))?
            }
        };
        if kind == VolumeKind::File && size_bytes % BLOCK_SIZE as u64 != 0 {
            return Err(VolumeError::unusable(
                path,
                format!("size {size_bytes} is not a multiple of 4096: not an hbfence volume (truncated or another file?)"),
            ));
        }
        Ok(Volume { file, path: path.to_path_buf(), kind, size_bytes })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn kind(&self) -> VolumeKind {
        self.kind
    }
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
    pub fn blocks(&self) -> u64 {
        self.size_bytes / BLOCK_SIZE as u64
    }

    /// Reads `buf.blocks()` contiguous blocks starting at block `first`, in one I/O.
    pub fn read_blocks(&self, first: u64, buf: &mut AlignedBuf) -> Result<(), VolumeError> {
        let count = buf.blocks();
        self.read_blocks_into(first, buf, count)
    }

    /// Reads `count` contiguous blocks starting at block `first` into the start of `buf`, in
    /// one I/O.
    pub fn read_blocks_into(
        &self,
        first: u64,
        buf: &mut AlignedBuf,
        count: usize,
    ) -> Result<(), VolumeError> {
        if count > buf.blocks() {
            return Err(VolumeError::unusable(
                &self.path,
                format!("a read of {count} blocks does not fit a buffer of {}", buf.blocks()),
            ));
        }
        let count = count as u64;
        let op = || {
            format!(
                "read of blocks {first}..{} ({} bytes)",
                first + count,
                count * BLOCK_SIZE as u64
            )
        };
        if first + count > self.blocks() {
            return Err(VolumeError::unusable(
                &self.path,
                format!(
                    "{} is beyond the end of the volume ({} blocks): the volume is truncated",
                    op(),
                    self.blocks()
                ),
            ));
        }
        let offset = first * BLOCK_SIZE as u64;
        let dst = &mut buf.as_mut_slice()[..count as usize * BLOCK_SIZE];
        let mut done = 0usize;
        while done < dst.len() {
            match self.file.read_at(&mut dst[done..], offset + done as u64) {
                Ok(0) => {
                    return Err(VolumeError::unusable(
                        &self.path,
                        format!(
                            "{}: end of file after {done} bytes: the volume is truncated",
                            op()
                        ),
                    ))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(VolumeError::io(&self.path, op(), e)),
            }
        }
        Ok(())
    }

    /// Writes one block (block `index` <- buffer block `buf_block`).
    pub fn write_block(
        &self,
        index: u64,
        buf: &AlignedBuf,
        buf_block: usize,
    ) -> Result<(), VolumeError> {
        self.write_range(
            index,
            &buf.as_slice()[buf_block * BLOCK_SIZE..(buf_block + 1) * BLOCK_SIZE],
        )
    }

    /// Writes whole blocks from `data` (taken from an AlignedBuf) starting at block `first`.
    fn write_range(&self, first: u64, data: &[u8]) -> Result<(), VolumeError> {
        let count = (data.len() / BLOCK_SIZE) as u64;
        let op = || format!("write of blocks {first}..{}", first + count);
        if first + count > self.blocks() {
            return Err(VolumeError::unusable(
                &self.path,
                format!("{} is beyond the end of the volume", op()),
            ));
        }
        let offset = first * BLOCK_SIZE as u64;
        let mut done = 0usize;
        while done < data.len() {
            match self.file.write_at(&data[done..], offset + done as u64) {
                Ok(0) => {
                    return Err(VolumeError::io(
                        &self.path,
                        op(),
                        io::Error::from(io::ErrorKind::WriteZero),
                    ))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(VolumeError::io(&self.path, op(), e)),
            }
        }
        Ok(())
    }

    /// Writes every block of `buf` starting at block `first` (used by `init`).
    pub fn write_blocks(&self, first: u64, buf: &AlignedBuf) -> Result<(), VolumeError> {
        self.write_range(first, buf.as_slice())
    }

    /// Reads and decodes block 0; anything but a valid header is an error.
    /// What the blocks from 1 up to `end` (or the volume's end) say, read 256 at a time: at
    /// most 1 MiB of buffer (the daemon may run under mlockall).
    pub fn census(&self, end: u64) -> Result<crate::core::header::Census, VolumeError> {
        const CHUNK: u64 = 256;
        let end = self.blocks().min(end);
        let mut census = crate::core::header::Census::default();
        let mut first = 1;
        while first < end {
            let n = CHUNK.min(end - first);
            let mut buf = AlignedBuf::new(n as usize)
                .map_err(|e| VolumeError::io(&self.path, "allocate buffer", e))?;
            self.read_blocks(first, &mut buf)?;
            census.add(first, buf.as_slice());
            first += n;
        }
        Ok(census)
    }

    pub fn read_header(&self) -> Result<Header, VolumeError> {
        if self.blocks() == 0 {
            return Err(VolumeError::unusable(
                &self.path,
                "is empty (0 bytes): not initialized; run `hbfence init --volume PATH`",
            ));
        }
        let mut buf =
            AlignedBuf::new(1).map_err(|e| VolumeError::io(&self.path, "allocate buffer", e))?;
        self.read_blocks(0, &mut buf)?;
        match format::decode(buf.block(0)) {
            Decoded::Header(h) => {
                let need = h.geometry().total_blocks();
                if self.blocks() < need {
                    return Err(VolumeError::unusable(
                        &self.path,
                        format!(
                            "is truncated: {} blocks, the header (max_hosts {}) needs {need}",
                            self.blocks(),
                            h.max_hosts
                        ),
                    ));
                }
                Ok(h)
            }
            state @ Decoded::Unsupported { .. } => {
                Err(VolumeError::BadHeader { path: self.path.clone(), state: Box::new(state) })
            }
            state => {
                // The heartbeats of hosts 1..=256: enough to tell a damaged header of a live
                // volume from another program's data, without knowing max_hosts.
                let census = self.census(1 + 256)?;
                match census.cluster() {
                    Ok(Some(cluster)) => Err(VolumeError::DamagedHeader {
                        path: self.path.clone(),
                        state: Box::new(state),
                        cluster,
                        intact: census.intact(),
                    }),
                    _ => Err(VolumeError::BadHeader {
                        path: self.path.clone(),
                        state: Box::new(state),
                    }),
                }
            }
        }
    }

    /// Reads the header plus every heartbeat and mailbox block, in two I/Os.
    pub fn read_all(&self) -> Result<Snapshot, VolumeError> {
        let header = self.read_header()?;
        let geo = header.geometry();
        let mut buf = AlignedBuf::new(geo.total_blocks() as usize - 1)
            .map_err(|e| VolumeError::io(&self.path, "allocate buffer", e))?;
        self.read_blocks(1, &mut buf)?;
        Ok(Snapshot { header, geometry: geo, blocks: buf })
    }
}

impl Volume {
    /// Reads every heartbeat and mailbox and decodes them as the daemon does (verdict pages
    /// included).
    pub fn read_view(&self, header: &Header) -> Result<crate::core::view::VolumeView, VolumeError> {
        let geo = header.geometry();
        let mut buf = AlignedBuf::new(2 * geo.max_hosts as usize)
            .map_err(|e| VolumeError::io(&self.path, "allocate buffer", e))?;
        self.read_blocks(1, &mut buf)?;
        let mut view = crate::core::view::decode_view(buf.as_slice(), geo, &header.cluster);
        if let Some(mut pages) = self.page_buffer(geo)? {
            self.read_verdict_pages(&mut view, geo, &header.cluster, &mut pages);
        }
        // Every published VM list (readers without a daemon: `status`, `check`, `vms`).
        let mut reader = crate::inventory::InventoryReader::new()
            .map_err(|e| VolumeError::io(&self.path, "allocate buffer", e))?;
        reader.fetch(self, geo, &header.cluster, &mut view, None, usize::MAX);
        Ok(view)
    }

    /// A buffer for one host's verdict pages; `None` when the volume has none (up to 123
    /// hosts).
    pub fn page_buffer(&self, geo: Geometry) -> Result<Option<AlignedBuf>, VolumeError> {
        match geo.pages_per_host() {
            0 => Ok(None),
            n => AlignedBuf::new(n as usize)
                .map(Some)
                .map_err(|e| VolumeError::io(&self.path, "allocate buffer", e)),
        }
    }

    /// Writes the verdict pages of `record`'s table (the part beyond its heartbeat block), in
    /// one I/O, before the heartbeat that names the table. Nothing when it fits in the block.
    pub fn write_verdict_pages(
        &self,
        geo: Geometry,
        record: &format::Heartbeat,
        buf: &mut AlignedBuf,
    ) -> Result<(), VolumeError> {
        let pages = format::encode_verdict_pages(record);
        if pages.is_empty() {
            return Ok(());
        }
        if pages.len() > buf.blocks() {
            return Err(VolumeError::unusable(
                &self.path,
                format!(
                    "a verdict table of {} needs {} pages, the volume has {} per host",
                    record.verdicts.len(),
                    pages.len(),
                    buf.blocks()
                ),
            ));
        }
        for (i, page) in pages.iter().enumerate() {
            buf.block_mut(i).copy_from_slice(page);
        }
        let data = &buf.as_slice()[..pages.len() * BLOCK_SIZE];
        self.write_range(geo.page_block(record.host_id, 0), data)
    }

    /// Reads the verdict pages a view's newest tables need ([`crate::core::view::pages_wanted`])
    /// and completes those tables. A page that cannot be read leaves its table incomplete, and
    /// an incomplete table is not offered: never part of one.
    pub fn read_verdict_pages(
        &self,
        view: &mut crate::core::view::VolumeView,
        geo: Geometry,
        cluster: &format::ClusterId,
        buf: &mut AlignedBuf,
    ) {
        for id in crate::core::view::pages_wanted(view) {
            if self.read_blocks(geo.page_block(id, 0), buf).is_ok() {
                crate::core::view::complete_tables(view, geo, cluster, &[(id, buf.as_slice())]);
            }
        }
    }

    /// Writes the VM list attached to `record` (if any) into the inventory set its heartbeat
    /// will name, in one I/O, before that heartbeat. Nothing for an empty list.
    pub fn write_inventory(
        &self,
        geo: Geometry,
        record: &format::Heartbeat,
        buf: &mut AlignedBuf,
    ) -> Result<(), VolumeError> {
        let Some(list) = record.inventory.write.as_deref() else { return Ok(()) };
        let blocks = format::encode_inventory(list);
        if blocks.is_empty() {
            return Ok(());
        }
        if blocks.len() > buf.blocks() {
            return Err(VolumeError::unusable(
                &self.path,
                format!(
                    "an inventory of {} blocks does not fit a buffer of {}",
                    blocks.len(),
                    buf.blocks()
                ),
            ));
        }
        for (i, b) in blocks.iter().enumerate() {
            buf.block_mut(i).copy_from_slice(b);
        }
        let set_1 = record.inventory.flags & format::inventory_flags::SET_1 != 0;
        let data = &buf.as_slice()[..blocks.len() * BLOCK_SIZE];
        self.write_range(geo.inventory_set(record.host_id, set_1), data)
    }

    /// Writes a message into host `m.host_id`'s mailbox block.
    pub fn write_mailbox(&self, header: &Header, m: &format::Mailbox) -> Result<(), VolumeError> {
        let mut buf =
            AlignedBuf::new(1).map_err(|e| VolumeError::io(&self.path, "allocate buffer", e))?;
        buf.block_mut(0).copy_from_slice(&format::encode_mailbox(m));
        self.write_block(header.geometry().mailbox_block(m.host_id), &buf, 0)
    }
}

/// Every block of a volume at one moment.
pub struct Snapshot {
    pub header: Header,
    pub geometry: Geometry,
    /// Blocks 1.. of the volume (index 0 here is volume block 1).
    blocks: AlignedBuf,
}

impl Snapshot {
    pub fn heartbeat_raw(&self, id: u32) -> &[u8] {
        self.blocks.block(self.geometry.heartbeat_block(id) as usize - 1)
    }
    pub fn mailbox_raw(&self, id: u32) -> &[u8] {
        self.blocks.block(self.geometry.mailbox_block(id) as usize - 1)
    }
    pub fn heartbeat(&self, id: u32) -> Decoded {
        format::decode(self.heartbeat_raw(id))
    }
    /// Page `page` of host `id`'s verdict pages (`page < geometry.pages_per_host()`).
    pub fn verdict_page(&self, id: u32, page: u64) -> Decoded {
        format::decode(self.blocks.block(self.geometry.page_block(id, page) as usize - 1))
    }
    /// The VM list host `id`'s heartbeat `hb` names, from the inventory set it names; None
    /// when that set does not hold it whole (torn, or rewritten since the heartbeat).
    pub fn inventory(&self, hb: &format::Heartbeat) -> Option<format::Inventory> {
        let info = &hb.inventory;
        let set_1 = info.flags & format::inventory_flags::SET_1 != 0;
        let first = self.geometry.inventory_set(hb.host_id, set_1) as usize - 1;
        let end = (first + format::INVENTORY_SET).min(self.blocks.blocks());
        // A volume shorter than its geometry holds no list (never a panic on a bad file).
        let first = first.min(end);
        format::assemble_inventory(
            self.blocks.block_range(first, end),
            &hb.cluster,
            hb.host_id,
            hb.incarnation,
            info.gen,
            usize::from(info.count),
        )
    }
    pub fn mailbox(&self, id: u32) -> Decoded {
        format::decode(self.mailbox_raw(id))
    }
    /// The snapshot decoded as the daemon decodes a read (no second read of the volume).
    pub fn view(&self) -> crate::core::view::VolumeView {
        let geo = self.geometry;
        let cluster = &self.header.cluster;
        let mut view = crate::core::view::decode_view(self.blocks.as_slice(), geo, cluster);
        let per_host = geo.pages_per_host() as usize * BLOCK_SIZE;
        for id in crate::core::view::pages_wanted(&view) {
            let start = (geo.page_block(id, 0) as usize - 1) * BLOCK_SIZE;
            if let Some(raw) = self.blocks.as_slice().get(start..start + per_host) {
                crate::core::view::complete_tables(&mut view, geo, cluster, &[(id, raw)]);
            }
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The I/O thread's read buffer grows to the longest request and never shrinks.
    #[test]
    fn an_aligned_buffer_fits_the_longest_request() {
        let mut buf = AlignedBuf::new(1).unwrap();
        buf.fit(1).unwrap();
        assert_eq!(buf.blocks(), 1);
        buf.fit(4).unwrap();
        assert_eq!(buf.blocks(), 4);
        assert_eq!(buf.as_slice().as_ptr() as usize % 4096, 0, "page-aligned for O_DIRECT");
        buf.fit(2).unwrap();
        assert_eq!(buf.blocks(), 4);
    }
}
