//! Executables that tests write (fake fence agents, BMC chassis scripts, event hooks).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Writes `text` to `path` as an executable (mode 0755), through a child process.
///
/// Written from this process (`fs::write`), the script's inode has a write descriptor here
/// for a moment; a child that another test thread forks in that moment keeps a copy of it
/// until its exec, and running the script meanwhile fails with ETXTBSY ("Text file busy").
/// A file this process never opens for writing cannot be busy because of this process's
/// forks.
pub fn write_executable(path: &Path, text: &str) -> std::io::Result<()> {
    let mut writer = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 0755 \"$1\"", "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()?;
    let written = writer.stdin.take().map_or(Ok(()), |mut stdin| stdin.write_all(text.as_bytes()));
    let status = writer.wait()?;
    written?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "writing the script {} failed: {status}",
            path.display()
        )))
    }
}
