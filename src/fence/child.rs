//! Run one child process with a hard timeout, capturing its output.
//!
//! Fencing commands talk to remote BMCs and may hang for a long time (ipmitool retries an
//! unreachable BMC for about 20 s). The caller is a worker thread, so polling with short sleeps
//! is fine here; the watchdog thread never comes near this code (S7).

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How often the child is polled for exit.
const POLL: Duration = Duration::from_millis(10);
/// How long to wait for the output pipes to close after the child exited or was killed. A
/// grandchild that left its own process group may keep them open; we then report what we have.
const PIPE_GRACE: Duration = Duration::from_millis(500);

pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

pub(crate) enum RunError {
    /// The program could not be started at all.
    Spawn(std::io::Error),
    /// The child (and its process group) was killed after `timeout`; output read so far.
    TimedOut { stdout: Vec<u8>, stderr: Vec<u8> },
    /// Waiting for the child failed (should not happen).
    Wait(std::io::Error),
}

/// Runs `cmd` with stdin fed from `input` (or /dev/null), kills it and its process group with
/// SIGKILL after `timeout`, and always reaps it.
pub(crate) fn run(
    mut cmd: Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Finished, RunError> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group: a timeout kill also reaches the helpers a fence agent started
        // (fence_ipmilan runs ipmitool), which would otherwise keep running and hold our pipes.
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;

    // Every pipe is served by its own thread so a chatty child can never block on a full pipe
    // while we wait for it. The stdin writer ignores EPIPE: a child may exit without reading.
    if let (Some(mut stdin), Some(data)) = (child.stdin.take(), input) {
        // If no thread can be created the pipe is dropped: the child sees EOF and fails,
        // which is reported like any failure (never a panic in the daemon).
        let _ = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let (tx, rx) = mpsc::channel();
    spawn_reader(0, child.stdout.take(), &tx);
    spawn_reader(1, child.stderr.take(), &tx);
    drop(tx);

    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() >= timeout => {
                timed_out = true;
                // The group id is the child's pid (process_group(0)); the child is not reaped
                // yet, so that id cannot have been reused.
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
                let _ = child.kill();
                break child.wait().map_err(RunError::Wait)?;
            }
            Ok(None) => thread::sleep(POLL),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Wait(e));
            }
        }
    };

    let mut outputs = [Vec::new(), Vec::new()];
    let grace_end = Instant::now() + PIPE_GRACE;
    for _ in 0..2 {
        match rx.recv_timeout(grace_end.saturating_duration_since(Instant::now())) {
            Ok((index, buf)) => outputs[index] = buf,
            Err(_) => break,
        }
    }
    let [stdout, stderr] = outputs;
    if timed_out {
        Err(RunError::TimedOut { stdout, stderr })
    } else {
        Ok(Finished { status, stdout, stderr })
    }
}

/// Reads `pipe` to its end in a thread and sends `(index, bytes)` on `tx`.
fn spawn_reader<R: Read + Send + 'static>(
    index: usize,
    pipe: Option<R>,
    tx: &mpsc::Sender<(usize, Vec<u8>)>,
) {
    if let Some(mut pipe) = pipe {
        let tx = tx.clone();
        let _ = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send((index, buf));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    #[test]
    fn captures_output_and_status() {
        let done =
            run(sh("cat; echo err >&2; exit 3"), Some(b"hello".to_vec()), Duration::from_secs(5))
                .ok()
                .expect("child runs");
        assert_eq!(done.stdout, b"hello");
        assert_eq!(done.stderr, b"err\n");
        assert_eq!(done.status.code(), Some(3));
    }

    #[test]
    fn large_output_does_not_deadlock() {
        let script = "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2";
        let done = run(sh(script), None, Duration::from_secs(10)).ok().expect("child runs");
        assert_eq!(done.stdout.len(), 1_000_000);
        assert_eq!(done.stderr.len(), 1_000_000);
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        // The shell's background grandchild holds stdout open; only a group kill closes it.
        let start = Instant::now();
        match run(sh("echo started; sleep 30 & sleep 30"), None, Duration::from_millis(300)) {
            Err(RunError::TimedOut { stdout, .. }) => assert_eq!(stdout, b"started\n"),
            _ => panic!("expected a timeout"),
        }
        assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let cmd = Command::new("/nonexistent/hbfence-no-such-program");
        assert!(matches!(run(cmd, None, Duration::from_secs(1)), Err(RunError::Spawn(_))));
    }
}
