//! `hbfence keygen`: the cluster key of the peer channel (32 bytes from the kernel's random
//! source), written so that no other user can ever read it: created mode 0600 under a temporary
//! name with O_EXCL (no file of someone else is followed or reused), then renamed into place.

use super::{CliError, CliResult};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the key.
    #[arg(long, short = 'o', value_name = "PATH", default_value = crate::config::DEFAULT_KEY_FILE)]
    pub output: PathBuf,
    /// Replace an existing key (every host then needs the new one).
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: &KeygenArgs) -> CliResult {
    write_key(&a.output, a.force)?;
    println!(
        "wrote a new cluster key to {} (32 bytes, mode 0600); copy it to the same path on every host of the cluster (for instance with scp, keeping owner root and mode 0600) and restart the agents",
        a.output.display()
    );
    Ok(())
}

pub fn write_key(path: &Path, force: bool) -> Result<(), CliError> {
    if !force && std::fs::symlink_metadata(path).is_ok() {
        return Err(CliError::new(format!(
            "{} exists; it may be the key every host of the cluster shares. Pass --force to replace it (then copy the new key to every host)",
            path.display()
        )));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(CliError::new(format!(
            "directory {} does not exist; create it (for the default: `mkdir -p /etc/hbfence`) or pass --output PATH",
            dir.display()
        )));
    }
    let mut key = [0u8; crate::net::wire::KEY_LEN];
    crate::sys::random_bytes(&mut key).map_err(|e| {
        CliError::new(format!("cannot read random bytes from the kernel (getrandom): {e}"))
    })?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&key)?;
            f.sync_all()
        })
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()));
    let placed = written.and_then(|()| {
        let r = if force {
            std::fs::rename(&tmp, path)
        } else {
            // Without --force, a key that appeared meanwhile is not replaced either.
            std::fs::hard_link(&tmp, path).and_then(|()| std::fs::remove_file(&tmp))
        };
        r.map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("{} exists; pass --force to replace it", path.display())
            }
            _ => format!("cannot put the key at {}: {e}", path.display()),
        })
    });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(CliError::new(e));
    }
    // The rename is durable only once the directory is on disk.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_is_32_random_bytes_mode_0600_and_is_not_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        write_key(&path, false).unwrap();
        let first = std::fs::read(&path).unwrap();
        assert_eq!(first.len(), 32);
        assert_ne!(first, vec![0u8; 32]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        crate::net::read_key(&path).expect("the agent accepts what keygen writes");
        let e = write_key(&path, false).unwrap_err();
        assert!(e.message.contains("--force"), "{}", e.message);
        assert_eq!(std::fs::read(&path).unwrap(), first, "unchanged without --force");
        write_key(&path, true).unwrap();
        let second = std::fs::read(&path).unwrap();
        assert_eq!(second.len(), 32);
        assert_ne!(second, first, "a new key");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
        let e = write_key(&dir.path().join("missing/cluster.key"), false).unwrap_err();
        assert!(e.message.contains("does not exist"), "{}", e.message);
    }

    #[test]
    fn the_agent_refuses_a_key_of_the_wrong_size_or_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, [1u8; 31]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = crate::net::read_key(&path).unwrap_err();
        assert!(e.contains("31 bytes") && e.contains("exactly 32"), "{e}");
        std::fs::write(&path, [1u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = crate::net::read_key(&path).unwrap_err();
        assert!(e.contains("0640") && e.contains("chmod 0600"), "{e}");
        let e = crate::net::read_key(&dir.path().join("none")).unwrap_err();
        assert!(e.contains("hbfence keygen"), "{e}");
    }
}
