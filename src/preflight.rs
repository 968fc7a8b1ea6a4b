//! Start-up checks shared by `hbfence run` and `hbfence run --check`, so that the two cannot
//! drift: everything `run` verifies before it arms anything, with the exit code `run` gives.
//!
//! Local input that could run code as root or quietly weaken fencing is held to file rules:
//! - hooks (`[events] hooks_dir`, every hook in it and every directory above it): owned by root,
//!   not writable by group or others (a directory above may be if it is sticky, like /tmp), no
//!   symlink that leaves the hooks directory;
//! - password files: owned by root, no access for group or others, one non-empty line;
//! - the cluster key (`[network] key_file`): the same ownership and mode rules, exactly 32 bytes;
//! - `[self_fence] sysrq_trigger`: anything but /proc/sysrq-trigger is a test double, announced
//!   loudly; its directory must exist;
//! - `[watchdog] device`: a character device (or the FIFO test double), inspected, not opened;
//! - the event log and the runtime directory: writable (or creatable) where they are configured.
//!
//! "Owned by root" also accepts the user hbfence runs as (a non-root agent, as in tests, runs its
//! hooks as that user, who could replace them anyway); as root the rule is root only.

use crate::config::Config;
use crate::core::format::Header;
use crate::daemon::StartError;
use crate::volume::Volume;
use crate::watchdog::{self, DeviceKind};
use std::fs::Metadata;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The real trigger; any other `sysrq_trigger` is a test double.
pub const SYSRQ_TRIGGER: &str = "/proc/sysrq-trigger";

/// What the checks found, for `run` to use and `run --check` to print.
pub struct Checked {
    /// Every volume with the header it holds.
    pub volumes: Vec<(Volume, Header)>,
    /// The cluster's header, with the membership a read quorum of the volumes holds.
    pub header: Header,
    pub watchdog: DeviceKind,
    /// The hooks that will run for events (executable files of hooks_dir).
    pub hooks: Vec<PathBuf>,
    /// Test doubles in use: announced loudly at start (log warning and stderr).
    pub warnings: Vec<String>,
    /// `[network]`: the cluster key, read and checked.
    pub network_key: Option<crate::net::wire::Key>,
}

/// Every check `run` makes before it arms anything, in `run`'s order; the error carries the
/// exit code `run` exits with (78 configuration, 69 not available yet).
pub fn check(config: &Config) -> Result<Checked, StartError> {
    let (volumes, header) = crate::daemon::open_volumes(config)?;
    let wd_secs = header.timing.watchdog_timeout_secs();
    let device = &config.watchdog.device;
    let watchdog = watchdog::precheck(device, wd_secs).map_err(|e| {
        if e.config {
            StartError::config(format!("[watchdog] device: {e}"))
        } else {
            StartError::unavailable(e)
        }
    })?;
    for p in &config.peers {
        if let Some(file) = p.password_file() {
            crate::fence::check_password_file(file)
                .map_err(|e| StartError::config(format!("[[peer]] id {}: {e}", p.id)))?;
        }
    }
    let network_key = match &config.network {
        Some(n) => Some(crate::net::read_key(&n.key_file).map_err(StartError::config)?),
        None => None,
    };
    let mut warnings = Vec::new();
    for p in config.peers.iter().filter(|p| !header.admits(p.id)) {
        warnings.push(format!(
            "[[peer]] id {} is not a member of the cluster (members {}): its heartbeat is not read; add it with `hbfence members add {}` or remove the [[peer]]",
            p.id,
            crate::core::header::id_ranges(&header.members),
            p.id
        ));
    }
    if watchdog == DeviceKind::Double {
        warnings.push(format!(
            "[watchdog] device {} is a FIFO: the TEST DOUBLE, no hardware watchdog protects this host; never use this in production",
            device.display()
        ));
    }
    warnings.extend(check_sysrq(&config.self_fence.sysrq_trigger).map_err(StartError::config)?);
    let hooks = check_hooks(&config.events.hooks_dir).map_err(StartError::config)?;
    check_writable_file("[events] log", &config.events.log).map_err(StartError::config)?;
    check_writable_dir("[daemon] runtime_dir", &config.daemon.runtime_dir)
        .map_err(StartError::config)?;
    if let Some(path) = &config.metrics.textfile {
        warnings.extend(crate::daemon::check_metrics_dir(path).map_err(StartError::config)?);
    }
    Ok(Checked { volumes, header, watchdog, hooks, warnings, network_key })
}

/// A file owned by root (or by the user hbfence runs as) can be changed only by that user.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

fn owner_problem(meta: &Metadata, path: &Path) -> Option<String> {
    (!trusted_owner(meta.uid())).then(|| {
        format!(
            "it is owned by uid {}, not root; run `chown root:root {}`",
            meta.uid(),
            path.display()
        )
    })
}

/// The rules for a password file (applied at start and at every use): a regular file owned
/// by root that neither group nor others may access. The error says what is wrong and the fix.
pub fn secret_file_rules(path: &Path, meta: &Metadata) -> Result<(), String> {
    if !meta.is_file() {
        return Err(
            "it is not a regular file; put the password in a regular file, mode 0600".into()
        );
    }
    if let Some(p) = owner_problem(meta, path) {
        return Err(p);
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "it has mode {mode:04o}: group or others may access it (the rule: no access for group or others); run `chmod 0600 {}`",
            path.display()
        ));
    }
    Ok(())
}

/// Code that hbfence runs as root (a hook) or a directory holding it: owned by root, not
/// writable by group or others. `sticky_ok`: a sticky directory (like /tmp) above the hooks
/// may be writable by others, who cannot rename or replace what they do not own there.
fn code_rules(what: &str, path: &Path, meta: &Metadata, sticky_ok: bool) -> Result<(), String> {
    let rule = "hooks run as root, so a hook, its directory and every directory above must be owned by root and not writable by group or others";
    if let Some(p) = owner_problem(meta, path) {
        return Err(format!("{what} {}: {p} ({rule})", path.display()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    let sticky = meta.is_dir() && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(sticky_ok && sticky) {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "group",
            _ => "others",
        };
        return Err(format!(
            "{what} {}: it has mode {mode:04o}: writable by {who} ({rule}); run `chmod go-w {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// Names the events driver never runs (see `events::hooks`): hidden files and package-manager
/// leftovers.
fn ignored_hook_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with(".dpkg-old")
        || name.ends_with(".dpkg-dist")
        || name.ends_with(".rpmnew")
        || name.ends_with('~')
}

/// Checks `[events] hooks_dir` and every hook in it; returns the hooks that will run (the
/// executable regular files). A missing directory means no hooks, as for the events driver.
pub fn check_hooks(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let what = "[events] hooks_dir";
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{what} {}: {e}", dir.display())),
        Ok(_) => {}
    }
    let canon = std::fs::canonicalize(dir).map_err(|e| {
        format!(
            "{what} {}: {e} (a symlink to nowhere?); point hooks_dir at a directory",
            dir.display()
        )
    })?;
    let meta = std::fs::metadata(&canon).map_err(|e| format!("{what} {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!(
            "{what} {}: it is not a directory; make it a directory (owner root, mode 0755) or set hooks_dir to one",
            dir.display()
        ));
    }
    code_rules(what, &canon, &meta, false)?;
    // Above the directory itself and, for a hooks_dir reached through a symlink, above the
    // symlink too (whoever may write there may replace the symlink).
    let lexical = dir.parent().into_iter().flat_map(Path::ancestors);
    for above in canon.ancestors().skip(1).chain(lexical) {
        let m = std::fs::metadata(above)
            .map_err(|e| format!("{what} {}: directory {}: {e}", dir.display(), above.display()))?;
        code_rules(&format!("directory above {what}"), above, &m, true)?;
    }
    let entries = std::fs::read_dir(&canon)
        .map_err(|e| format!("{what} {}: cannot list it: {e}", dir.display()))?;
    let mut hooks = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{what} {}: cannot list it: {e}", dir.display()))?;
        let name = entry.file_name();
        if ignored_hook_name(&name.to_string_lossy()) {
            continue;
        }
        let path = canon.join(&name);
        let lmeta = std::fs::symlink_metadata(&path)
            .map_err(|e| format!("hook {}: {e}", path.display()))?;
        if lmeta.file_type().is_symlink() {
            let target = std::fs::canonicalize(&path).map_err(|e| {
                format!(
                    "hook {} is a symlink that cannot be followed ({e}); remove it or make it point to a hook inside {}",
                    path.display(),
                    canon.display()
                )
            })?;
            if !target.starts_with(&canon) {
                return Err(format!(
                    "hook {} is a symlink to {}, outside hooks_dir {} (the rule: no symlink that leaves the hooks directory); copy the hook into {} (owner root, mode 0755) instead",
                    path.display(),
                    target.display(),
                    canon.display(),
                    canon.display()
                ));
            }
            // Directories between hooks_dir and the target hold code too.
            for d in target.ancestors().skip(1).take_while(|d| *d != canon) {
                let m = std::fs::metadata(d).map_err(|e| format!("hook {}: {e}", d.display()))?;
                code_rules("directory of hook", d, &m, false)?;
            }
        }
        let meta = std::fs::metadata(&path).map_err(|e| format!("hook {}: {e}", path.display()))?;
        if !meta.is_file() {
            // Directories, FIFOs, devices: the events driver never runs them.
            continue;
        }
        code_rules("hook", &path, &meta, false)?;
        if meta.permissions().mode() & 0o111 != 0 {
            hooks.push(path);
        }
    }
    hooks.sort();
    Ok(hooks)
}

/// Checks `[self_fence] sysrq_trigger`; returns the announcement of a test double.
pub fn check_sysrq(path: &Path) -> Result<Option<String>, String> {
    let what = "[self_fence] sysrq_trigger";
    if path == Path::new(SYSRQ_TRIGGER) {
        return Ok(None);
    }
    let fix = format!("remove the key (default {SYSRQ_TRIGGER}) or, for a test, name a file in an existing directory");
    if !path.is_absolute() {
        return Err(format!("{what} {}: must be an absolute path; {fix}", path.display()));
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        return Err(format!(
            "{what} {}: its directory {} does not exist, so a self-fence could not be written and only the watchdog would reset this host; {fix}",
            path.display(),
            parent.display()
        ));
    }
    if path.is_dir() {
        return Err(format!("{what} {}: it is a directory; {fix}", path.display()));
    }
    Ok(Some(format!(
        "{what} is {}, not {SYSRQ_TRIGGER}: a TEST DOUBLE; a self-fence writes its letter there instead of resetting this host (only the watchdog would); never use this in production",
        path.display()
    )))
}

/// Not there (or a path component is a file, which [`creatable`] then names).
fn absent(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// The nearest existing directory at or above `path` must be writable, so `path` can be made.
fn creatable(what: &str, path: &Path) -> Result<(), String> {
    let mut dir = path;
    loop {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => return writable(what, path, dir),
            Ok(_) => {
                return Err(format!(
                    "{what} {}: {} is not a directory; choose a path in a directory",
                    path.display(),
                    dir.display()
                ))
            }
            Err(e) if absent(&e) => match dir.parent() {
                Some(p) => dir = p,
                None => return Err(format!("{what} {}: {e}", path.display())),
            },
            Err(e) => return Err(format!("{what} {}: {}: {e}", path.display(), dir.display())),
        }
    }
}

fn writable(what: &str, path: &Path, at: &Path) -> Result<(), String> {
    nix::unistd::access(at, nix::unistd::AccessFlags::W_OK).map_err(|e| {
        format!(
            "{what} {}: {} is not writable ({e}); fix its permissions or choose another path",
            path.display(),
            at.display()
        )
    })
}

/// A file hbfence appends to (the event log): writable, or creatable in its directory.
pub fn check_writable_file(what: &str, path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("{what} {}: must be an absolute path", path.display()));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(format!(
            "{what} {}: it is a directory; name a file (e.g. {}/events.jsonl)",
            path.display(),
            path.display()
        )),
        Ok(_) => writable(what, path, path),
        Err(e) if absent(&e) => creatable(what, path),
        Err(e) => Err(format!("{what} {}: {e}", path.display())),
    }
}

/// A directory hbfence writes into (the runtime dir): writable, or creatable.
pub fn check_writable_dir(what: &str, path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("{what} {}: must be an absolute path", path.display()));
    }
    creatable(what, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn root(test: &str) -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: needs root (chown); CI=true forbids skipping");
            }
            eprintln!("skipping {test}: needs root (chown to another uid)");
        }
        root
    }

    fn mode(p: &Path, m: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    }

    /// A hooks dir (mode 0755) with one hook (mode 0755) in a fresh tempdir.
    fn hooks_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hooks.d");
        fs::create_dir(&dir).unwrap();
        mode(&dir, 0o755);
        let hook = dir.join("10-page");
        fs::write(&hook, "#!/bin/sh\n").unwrap();
        mode(&hook, 0o755);
        (tmp, dir, hook)
    }

    #[test]
    fn a_clean_hooks_dir_lists_its_executables_and_a_missing_one_means_no_hooks() {
        let (tmp, dir, hook) = hooks_dir();
        fs::write(dir.join("README"), "not run").unwrap();
        mode(&dir.join("README"), 0o644);
        fs::write(dir.join(".hidden"), "").unwrap();
        mode(&dir.join(".hidden"), 0o777);
        fs::write(dir.join("x.dpkg-old"), "").unwrap();
        mode(&dir.join("x.dpkg-old"), 0o777);
        fs::create_dir(dir.join("sub")).unwrap();
        let canon = fs::canonicalize(&hook).unwrap();
        assert_eq!(check_hooks(&dir).unwrap(), vec![canon]);
        assert_eq!(check_hooks(&tmp.path().join("none")).unwrap(), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_hooks_dir_or_hook_writable_by_group_or_others_is_refused() {
        let (_tmp, dir, hook) = hooks_dir();
        mode(&hook, 0o775);
        let e = check_hooks(&dir).unwrap_err();
        assert!(
            e.contains("10-page") && e.contains("0775") && e.contains("writable by group"),
            "{e}"
        );
        assert!(e.contains("chmod go-w"), "{e}");
        mode(&hook, 0o757);
        let e = check_hooks(&dir).unwrap_err();
        assert!(e.contains("writable by others"), "{e}");
        mode(&hook, 0o755);
        mode(&dir, 0o775);
        let e = check_hooks(&dir).unwrap_err();
        assert!(e.contains("[events] hooks_dir") && e.contains("0775"), "{e}");
        // A sticky, world-writable hooks dir lets anyone add a hook: refused too.
        mode(&dir, 0o1777);
        assert!(check_hooks(&dir).unwrap_err().contains("1777"));
        mode(&dir, 0o755);
        // A non-executable file that its group could rewrite is refused as well (chmod +x
        // by its owner would make it a hook).
        fs::write(dir.join("notes"), "").unwrap();
        mode(&dir.join("notes"), 0o664);
        assert!(check_hooks(&dir).unwrap_err().contains("notes"));
    }

    #[test]
    fn a_directory_above_hooks_dir_writable_by_others_is_refused_unless_sticky() {
        let (tmp, dir, _hook) = hooks_dir();
        mode(tmp.path(), 0o777);
        let e = check_hooks(&dir).unwrap_err();
        assert!(
            e.contains("directory above") && e.contains(&tmp.path().display().to_string()),
            "{e}"
        );
        mode(tmp.path(), 0o1777);
        check_hooks(&dir).unwrap();
        mode(tmp.path(), 0o700);
    }

    #[test]
    fn a_hook_or_hooks_dir_owned_by_another_user_is_refused() {
        if !root("a_hook_or_hooks_dir_owned_by_another_user_is_refused") {
            return;
        }
        let (_tmp, dir, hook) = hooks_dir();
        std::os::unix::fs::chown(&hook, Some(65534), Some(65534)).unwrap();
        let e = check_hooks(&dir).unwrap_err();
        assert!(
            e.contains("10-page") && e.contains("uid 65534") && e.contains("chown root"),
            "{e}"
        );
        std::os::unix::fs::chown(&hook, Some(0), Some(0)).unwrap();
        check_hooks(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let e = check_hooks(&dir).unwrap_err();
        assert!(e.contains("hooks_dir") && e.contains("uid 65534"), "{e}");
    }

    #[test]
    fn a_symlink_leaving_hooks_dir_is_refused_one_inside_is_fine() {
        let (tmp, dir, hook) = hooks_dir();
        std::os::unix::fs::symlink(&hook, dir.join("20-same")).unwrap();
        assert_eq!(check_hooks(&dir).unwrap().len(), 2);
        let outside = tmp.path().join("elsewhere");
        fs::write(&outside, "#!/bin/sh\n").unwrap();
        mode(&outside, 0o755);
        std::os::unix::fs::symlink(&outside, dir.join("30-out")).unwrap();
        let e = check_hooks(&dir).unwrap_err();
        assert!(e.contains("30-out") && e.contains("outside hooks_dir"), "{e}");
        fs::remove_file(dir.join("30-out")).unwrap();
        std::os::unix::fs::symlink("/tmp", dir.join("40-tmp")).unwrap();
        assert!(check_hooks(&dir).unwrap_err().contains("40-tmp"));
        fs::remove_file(dir.join("40-tmp")).unwrap();
        // A dangling symlink could later be made to point anywhere: refused.
        std::os::unix::fs::symlink(tmp.path().join("not-yet"), dir.join("50-dangling")).unwrap();
        assert!(check_hooks(&dir).unwrap_err().contains("50-dangling"));
        fs::remove_file(dir.join("50-dangling")).unwrap();
        // Inside, but in a subdirectory others may write: refused.
        let sub = dir.join("lib");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("real"), "#!/bin/sh\n").unwrap();
        mode(&sub.join("real"), 0o755);
        mode(&sub, 0o777);
        std::os::unix::fs::symlink(sub.join("real"), dir.join("60-sub")).unwrap();
        assert!(check_hooks(&dir).unwrap_err().contains("directory of hook"));
        mode(&sub, 0o755);
        assert_eq!(check_hooks(&dir).unwrap().len(), 3);
    }

    #[test]
    fn a_hooks_dir_symlink_in_a_directory_others_may_write_is_refused() {
        let (tmp, dir, _hook) = hooks_dir();
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        let link = open.join("hooks.d");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        mode(&open, 0o755);
        assert_eq!(check_hooks(&link).unwrap().len(), 1);
        mode(&open, 0o777);
        let e = check_hooks(&link).unwrap_err();
        assert!(e.contains("directory above") && e.contains(&open.display().to_string()), "{e}");
    }

    #[test]
    fn a_hooks_dir_that_is_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("hooks.d");
        fs::write(&file, "").unwrap();
        assert!(check_hooks(&file).unwrap_err().contains("not a directory"));
    }

    #[test]
    fn password_file_rules_name_the_path_the_rule_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let pw = tmp.path().join("pw");
        fs::write(&pw, "secret\n").unwrap();
        let meta = |p: &Path| fs::metadata(p).unwrap();
        mode(&pw, 0o600);
        secret_file_rules(&pw, &meta(&pw)).unwrap();
        mode(&pw, 0o400);
        secret_file_rules(&pw, &meta(&pw)).unwrap();
        for m in [0o640, 0o604, 0o660, 0o610] {
            mode(&pw, m);
            let e = secret_file_rules(&pw, &meta(&pw)).unwrap_err();
            assert!(e.contains(&format!("{m:04o}")) && e.contains("chmod 0600"), "{e}");
            assert!(e.contains("group or others"), "{e}");
        }
        assert!(secret_file_rules(tmp.path(), &meta(tmp.path())).unwrap_err().contains("regular"));
    }

    #[test]
    fn a_password_file_owned_by_another_user_is_refused() {
        if !root("a_password_file_owned_by_another_user_is_refused") {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let pw = tmp.path().join("pw");
        fs::write(&pw, "secret\n").unwrap();
        mode(&pw, 0o600);
        std::os::unix::fs::chown(&pw, Some(65534), None).unwrap();
        let e = secret_file_rules(&pw, &fs::metadata(&pw).unwrap()).unwrap_err();
        assert!(e.contains("uid 65534") && e.contains("chown root"), "{e}");
    }

    #[test]
    fn sysrq_doubles_are_announced_and_a_missing_directory_is_an_error() {
        assert_eq!(check_sysrq(Path::new(SYSRQ_TRIGGER)).unwrap(), None);
        let tmp = tempfile::tempdir().unwrap();
        let double = tmp.path().join("sysrq");
        let w = check_sysrq(&double).unwrap().unwrap();
        assert!(w.contains("TEST DOUBLE") && w.contains(&double.display().to_string()), "{w}");
        let lost = tmp.path().join("gone").join("sysrq");
        let e = check_sysrq(&lost).unwrap_err();
        assert!(e.contains("does not exist") && e.contains(SYSRQ_TRIGGER), "{e}");
        assert!(check_sysrq(Path::new("sysrq")).unwrap_err().contains("absolute"));
        assert!(check_sysrq(tmp.path()).unwrap_err().contains("directory"));
    }

    #[test]
    fn event_log_and_runtime_dir_must_be_writable_or_creatable() {
        let tmp = tempfile::tempdir().unwrap();
        check_writable_file("[events] log", &tmp.path().join("a/b/events.jsonl")).unwrap();
        check_writable_dir("[daemon] runtime_dir", &tmp.path().join("run")).unwrap();
        let file = tmp.path().join("plain");
        fs::write(&file, "").unwrap();
        let e = check_writable_file("[events] log", &file.join("events.jsonl")).unwrap_err();
        assert!(e.contains("[events] log") && e.contains("not a directory"), "{e}");
        let e = check_writable_dir("[daemon] runtime_dir", &file.join("run")).unwrap_err();
        assert!(e.contains("runtime_dir") && e.contains("not a directory"), "{e}");
        assert!(check_writable_file("[events] log", tmp.path()).unwrap_err().contains("directory"));
        assert!(check_writable_dir("[daemon] runtime_dir", &file)
            .unwrap_err()
            .contains("not a directory"));
    }
}
