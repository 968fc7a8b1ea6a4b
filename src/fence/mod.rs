//! Peer fencing driver: runs one fencing attempt against a peer's BMC (`ipmitool`) or a
//! fence-agents program, and confirms the result with a power-status query (S8).
//!
//! The core decides *when* to fence; this module only executes. Every command is a child
//! process with a timeout, run from a worker thread (the daemon's [`pool::Pool`], started at
//! boot, or [`spawn_attempt`]), never from the watchdog thread (S7). Passwords are read from
//! a file at each attempt and reach the child only through its environment (`IPMI_PASSWORD`
//! for `ipmitool -E`) or its stdin (fence agents): never argv, never logs, never error text
//! (captured output is redacted too).

pub(crate) mod child;
pub mod pool;

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use child::RunError;

/// A BMC reached with `ipmitool` over the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpmiTarget {
    pub address: String,
    pub port: u16,
    pub username: String,
    pub password_file: PathBuf,
    pub cipher_suite: u8,
    /// `ipmitool -I` interface, normally "lanplus".
    pub interface: String,
}

impl IpmiTarget {
    /// A target with the usual defaults: port 623, cipher suite 17, interface lanplus.
    pub fn new(
        address: impl Into<String>,
        username: impl Into<String>,
        password_file: impl Into<PathBuf>,
    ) -> Self {
        IpmiTarget {
            address: address.into(),
            port: 623,
            username: username.into(),
            password_file: password_file.into(),
            cipher_suite: 17,
            interface: "lanplus".into(),
        }
    }
}

/// A fence-agents program (`fence_ipmilan`, `fence_redfish`, ...) driven through stdin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentTarget {
    /// Found through PATH unless absolute.
    pub program: PathBuf,
    /// Written as `key=value` lines on the agent's stdin.
    pub options: Vec<(String, String)>,
    /// Sent as the `password=` line when given.
    pub password_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceMethod {
    Ipmi(IpmiTarget),
    Agent(AgentTarget),
}

impl FenceMethod {
    /// Names the target in messages, e.g. "BMC 10.0.0.12:623".
    pub fn describe(&self) -> String {
        match self {
            FenceMethod::Ipmi(t) => format!("BMC {}:{}", t.address, t.port),
            FenceMethod::Agent(t) => format!("fence agent {}", t.program.display()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
    /// The command succeeded but its answer was not understood; holds the answer.
    Unknown(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceSettings {
    /// The ipmitool binary (PATH lookup unless absolute).
    pub ipmitool: PathBuf,
    /// Limit for every single child process.
    pub command_timeout: Duration,
    /// After the `off` command, power off must be confirmed by a status query within this.
    pub confirm_timeout: Duration,
    /// Pause between status queries while confirming.
    pub poll_interval: Duration,
}

impl Default for FenceSettings {
    fn default() -> Self {
        FenceSettings {
            ipmitool: PathBuf::from("ipmitool"),
            command_timeout: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A status query answered "off" after the power-off request.
    ConfirmedOff { detail: String },
    /// Anything else; `detail` holds the last answers (never the password).
    Failed { detail: String },
}

#[derive(Debug)]
pub enum FenceError {
    /// The password file is missing, unreadable or malformed.
    PasswordFile { path: PathBuf, reason: String },
    /// The program could not be started.
    Spawn { program: PathBuf, target: String, error: std::io::Error },
    /// The command did not finish within the command timeout and was killed.
    Timeout { target: String, command: String, after: Duration, output: String },
    /// The command finished unsuccessfully.
    Failed { target: String, command: String, status: String, output: String, hint: &'static str },
    /// A fence-agent option that cannot be sent as a `key=value` line.
    BadOption { program: PathBuf, key: String, reason: &'static str },
}

impl fmt::Display for FenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(target) = self.target() {
            write!(f, "{target}: ")?;
        }
        write!(f, "{}; {}", self.what(), self.advice())
    }
}

impl std::error::Error for FenceError {}

impl FenceError {
    fn target(&self) -> Option<&str> {
        match self {
            FenceError::Spawn { target, .. }
            | FenceError::Timeout { target, .. }
            | FenceError::Failed { target, .. } => Some(target),
            FenceError::PasswordFile { .. } | FenceError::BadOption { .. } => None,
        }
    }

    /// What went wrong, without the target and the advice.
    fn what(&self) -> String {
        match self {
            FenceError::PasswordFile { path, reason } => {
                format!("cannot use password file {}: {reason}", path.display())
            }
            FenceError::Spawn { program, error, .. } => {
                format!("cannot run {}: {error}", program.display())
            }
            FenceError::Timeout { command, after, output, .. } if output.is_empty() => {
                format!("`{command}` gave no answer within {after:?} and was killed")
            }
            FenceError::Timeout { command, after, output, .. } => format!(
                "`{command}` gave no answer within {after:?} and was killed (output so far: \
                 {output})"
            ),
            FenceError::Failed { command, status, output, .. } => {
                format!("`{command}` failed ({status}): {}", or_no_output(output))
            }
            FenceError::BadOption { program, key, reason } => {
                format!("fence agent {}: option `{key}` {reason}", program.display())
            }
        }
    }

    /// What the operator should do about it.
    fn advice(&self) -> &'static str {
        match self {
            FenceError::PasswordFile { .. } => {
                "it must exist, be owned by root with mode 0600 and hold the password on one line"
            }
            FenceError::Spawn { .. } => "install it or configure its full path",
            FenceError::Timeout { .. } => "check that it is reachable (network, address, port)",
            FenceError::Failed { hint, .. } => hint,
            FenceError::BadOption { .. } => "fix the agent options in the config",
        }
    }

    /// Configuration problems that another try within this attempt cannot fix.
    fn is_permanent(&self) -> bool {
        matches!(
            self,
            FenceError::PasswordFile { .. }
                | FenceError::Spawn { .. }
                | FenceError::BadOption { .. }
        )
    }
}

/// Runs one fencing attempt: power off, then query the power state every `poll_interval`
/// until it reads off or `confirm_timeout` has elapsed. Blocks; run it in a worker thread.
pub fn power_off_and_confirm(method: &FenceMethod, settings: &FenceSettings) -> AttemptOutcome {
    let target = method.describe();
    let start = Instant::now();
    log::info!("fencing {target}: requesting power off");

    // The answer to `off` proves nothing (S8), and an already-off chassis may even refuse it,
    // so we go on to the status queries whatever it said, unless the setup itself is broken.
    let mut advice = None;
    let mut off_failed = false;
    let off = match power_action(method, settings, Action::Off) {
        Ok(answer) => format!("accepted ({})", or_no_output(&answer)),
        Err(e) if e.is_permanent() => return failed(&target, &e.what(), Some(e.advice())),
        Err(e) => {
            off_failed = true;
            advice = Some(e.advice());
            e.what()
        }
    };

    let deadline = Instant::now() + settings.confirm_timeout;
    let mut first = true;
    loop {
        let last = match power_status(method, settings) {
            Ok(PowerState::Off) => {
                let detail = format!(
                    "{target}: power off confirmed by a status query after {:.1} s",
                    start.elapsed().as_secs_f64()
                );
                log::info!("{detail}");
                return AttemptOutcome::ConfirmedOff { detail };
            }
            Ok(PowerState::On) => "power is still on".to_string(),
            Ok(PowerState::Unknown(answer)) => format!("unrecognised answer: {answer}"),
            Err(e) if e.is_permanent() => return failed(&target, &e.what(), Some(e.advice())),
            // Neither `off` nor `status` got an answer: the BMC is unreachable or refuses us
            // now. Report at once (the caller retries with backoff) instead of polling a BMC
            // that cannot answer until confirm_timeout.
            Err(e) if first && off_failed => {
                let what = format!("BMC not usable: off command: {off}; status: {}", e.what());
                return failed(&target, &what, Some(e.advice()));
            }
            Err(e) => {
                advice = Some(e.advice());
                e.what()
            }
        };
        first = false;
        let now = Instant::now();
        if now >= deadline {
            let what = format!(
                "power off NOT confirmed within {:?}; off command: {off}; last status: {last}",
                settings.confirm_timeout
            );
            return failed(&target, &what, advice);
        }
        thread::sleep(settings.poll_interval.min(deadline - now));
    }
}

/// Asks for the current power state (one child process).
pub fn power_status(
    method: &FenceMethod,
    settings: &FenceSettings,
) -> Result<PowerState, FenceError> {
    match method {
        FenceMethod::Ipmi(t) => {
            ipmitool(t, settings, Action::Status).map(|answer| parse_ipmi_status(&answer))
        }
        FenceMethod::Agent(t) => {
            let answer = agent(t, settings, Action::Status)?;
            // fence-agents convention: 0 = on, 2 = off, anything else = error.
            match answer.status.code() {
                Some(0) => Ok(PowerState::On),
                Some(2) => Ok(PowerState::Off),
                _ => Err(agent_failed(t, Action::Status, answer)),
            }
        }
    }
}

/// Requests power on (after an operator cleared the peer, or `after = "on"`). Not confirmed.
pub fn power_on(method: &FenceMethod, settings: &FenceSettings) -> Result<(), FenceError> {
    power_action(method, settings, Action::On).map(|_| ())
}

/// Runs [`power_off_and_confirm`] in a thread named `fence-<peer_id>` and sends the outcome on
/// `report` (a closed channel is ignored: the daemon is shutting down). Fails only if the
/// operating system cannot create a thread.
pub fn spawn_attempt(
    peer_id: u32,
    method: FenceMethod,
    settings: FenceSettings,
    report: Sender<(u32, AttemptOutcome)>,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new().name(format!("fence-{peer_id}")).spawn(move || {
        let outcome = power_off_and_confirm(&method, &settings);
        let _ = report.send((peer_id, outcome));
    })
}

#[derive(Clone, Copy)]
enum Action {
    Off,
    On,
    Status,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::On => "on",
            Action::Status => "status",
        }
    }
}

fn failed(target: &str, what: &str, advice: Option<&str>) -> AttemptOutcome {
    let detail = match advice {
        Some(advice) => format!("{target}: {what}; {advice}"),
        None => format!("{target}: {what}"),
    };
    log::warn!("fencing failed: {detail}");
    AttemptOutcome::Failed { detail }
}

/// `off` or `on`; returns the command's answer.
fn power_action(
    method: &FenceMethod,
    settings: &FenceSettings,
    action: Action,
) -> Result<String, FenceError> {
    match method {
        FenceMethod::Ipmi(t) => ipmitool(t, settings, action).map(|answer| answer.message),
        FenceMethod::Agent(t) => match agent(t, settings, action)? {
            answer if answer.status.success() => Ok(answer.message),
            answer => Err(agent_failed(t, action, answer)),
        },
    }
}

const IPMI_HINT: &str = "check the BMC address, port, username, password file and cipher suite";
const AGENT_HINT: &str = "check the agent's options and password file (run it by hand to see)";

fn ipmitool_args(t: &IpmiTarget, action: Action) -> Vec<String> {
    let (port, suite) = (t.port.to_string(), t.cipher_suite.to_string());
    // `-E`: the password comes from IPMI_PASSWORD. `-C` always: without it ipmitool probes
    // cipher suites for about 10 s.
    #[rustfmt::skip]
    let args = [
        "-I", &t.interface, "-H", &t.address, "-p", &port, "-U", &t.username, "-E", "-C", &suite,
        "chassis", "power", action.as_str(),
    ];
    args.map(String::from).into()
}

/// One ipmitool call; Ok when it exited with 0.
fn ipmitool(
    t: &IpmiTarget,
    settings: &FenceSettings,
    action: Action,
) -> Result<Answer, FenceError> {
    let password = read_password(&t.password_file)?;
    let mut cmd = Command::new(&settings.ipmitool);
    cmd.args(ipmitool_args(t, action))
        .env("IPMI_PASSWORD", OsString::from_vec(password.0.clone()))
        .env("LC_ALL", "C");
    let target = format!("BMC {}:{}", t.address, t.port);
    let command = format!("ipmitool chassis power {}", action.as_str());
    let answer = run(cmd, None, settings, &settings.ipmitool, &target, &command, Some(&password))?;
    if answer.status.success() {
        Ok(answer)
    } else {
        Err(FenceError::Failed {
            target,
            command,
            status: describe_status(answer.status),
            output: answer.message,
            hint: IPMI_HINT,
        })
    }
}

fn parse_ipmi_status(answer: &Answer) -> PowerState {
    for line in String::from_utf8_lossy(&answer.stdout).lines() {
        match line.trim() {
            "Chassis Power is off" => return PowerState::Off,
            "Chassis Power is on" => return PowerState::On,
            _ => {}
        }
    }
    PowerState::Unknown(or_no_output(&answer.message).to_string())
}

/// One fence-agent call: no arguments, `key=value` lines on stdin; any exit status is Ok.
fn agent(t: &AgentTarget, settings: &FenceSettings, action: Action) -> Result<Answer, FenceError> {
    let bad = |key: &str, reason| FenceError::BadOption {
        program: t.program.clone(),
        key: key.into(),
        reason,
    };
    let mut input = format!("action={}\n", action.as_str()).into_bytes();
    for (key, value) in &t.options {
        if key.is_empty() || key.contains(['=', '\n', '\0']) {
            return Err(bad(key, "is not a valid key"));
        }
        if key == "action" || key == "password" {
            return Err(bad(key, "is set by hbfence itself and must not be configured"));
        }
        if value.contains(['\n', '\0']) {
            return Err(bad(key, "has a value with a line break"));
        }
        input.extend_from_slice(format!("{key}={value}\n").as_bytes());
    }
    let password = t.password_file.as_deref().map(read_password).transpose()?;
    if let Some(p) = &password {
        input.extend_from_slice(b"password=");
        input.extend_from_slice(&p.0);
        input.push(b'\n');
    }
    let target = format!("fence agent {}", t.program.display());
    let command = format!("action={}", action.as_str());
    run(
        Command::new(&t.program),
        Some(input),
        settings,
        &t.program,
        &target,
        &command,
        password.as_ref(),
    )
}

fn agent_failed(t: &AgentTarget, action: Action, answer: Answer) -> FenceError {
    FenceError::Failed {
        target: format!("fence agent {}", t.program.display()),
        command: format!("action={}", action.as_str()),
        status: describe_status(answer.status),
        output: answer.message,
        hint: AGENT_HINT,
    }
}

/// What a finished child said.
struct Answer {
    status: ExitStatus,
    /// Raw stdout, only for matching exact answers.
    stdout: Vec<u8>,
    /// stdout and stderr for messages, with the password removed (see [`clean_output`]).
    message: String,
}

/// Runs a child with the command timeout.
fn run(
    cmd: Command,
    input: Option<Vec<u8>>,
    settings: &FenceSettings,
    program: &Path,
    target: &str,
    command: &str,
    password: Option<&Password>,
) -> Result<Answer, FenceError> {
    match child::run(cmd, input, settings.command_timeout) {
        Ok(done) => Ok(Answer {
            status: done.status,
            message: clean_output(&done.stdout, &done.stderr, password),
            stdout: done.stdout,
        }),
        Err(RunError::Spawn(error)) => {
            Err(FenceError::Spawn { program: program.to_path_buf(), target: target.into(), error })
        }
        Err(RunError::TimedOut { stdout, stderr }) => Err(FenceError::Timeout {
            target: target.into(),
            command: command.into(),
            after: settings.command_timeout,
            output: clean_output(&stdout, &stderr, password),
        }),
        Err(RunError::Wait(e)) => Err(FenceError::Failed {
            target: target.into(),
            command: command.into(),
            status: format!("waiting for it failed: {e}"),
            output: String::new(),
            hint: "this is a bug or a resource shortage on this host",
        }),
    }
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

fn or_no_output(s: &str) -> &str {
    if s.is_empty() {
        "no output"
    } else {
        s
    }
}

/// Bytes of a password file. Deliberately neither `Debug` nor `Display`: it cannot be logged.
struct Password(Vec<u8>);

/// Checks a password file as `run` and `run --check` do at start (the same rules as at every
/// use): owner root, no access for group or others, one non-empty line.
pub fn check_password_file(path: &Path) -> Result<(), FenceError> {
    read_password(path).map(drop)
}

/// Reads a password file, applying the ownership and mode rules to the file actually opened
/// (it may have been replaced since start-up).
fn read_password(path: &Path) -> Result<Password, FenceError> {
    use std::io::Read;
    let err = |reason: String| FenceError::PasswordFile { path: path.to_path_buf(), reason };
    let mut file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let meta = file.metadata().map_err(|e| err(e.to_string()))?;
    crate::preflight::secret_file_rules(path, &meta).map_err(&err)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| err(e.to_string()))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(err("it is empty".into()));
    }
    // A line break would inject extra lines into a fence agent's stdin; NUL cannot be passed.
    if bytes.iter().any(|b| matches!(b, b'\n' | b'\r' | b'\0')) {
        return Err(err("it holds more than one line (or a NUL byte)".into()));
    }
    Ok(Password(bytes))
}

/// Child output for messages: stdout and stderr joined, password removed, whitespace squeezed
/// to one line, length capped (a misbehaving program must not flood logs and events).
fn clean_output(stdout: &[u8], stderr: &[u8], password: Option<&Password>) -> String {
    const MAX: usize = 1000;
    let mut joined = stdout.to_vec();
    joined.push(b'\n');
    joined.extend_from_slice(stderr);
    if let Some(p) = password {
        joined = replace_all(&joined, &p.0, b"***");
    }
    let text = String::from_utf8_lossy(&joined);
    let mut out = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > MAX {
        let mut cut = MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(" ...");
    }
    out
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if !needle.is_empty() && haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn fast_settings(ipmitool: PathBuf) -> FenceSettings {
        FenceSettings {
            ipmitool,
            command_timeout: Duration::from_secs(5),
            confirm_timeout: Duration::from_millis(500),
            poll_interval: Duration::from_millis(50),
        }
    }

    fn target(dir: &Path, password: &str) -> IpmiTarget {
        let file = dir.join("pw");
        std::fs::write(&file, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        IpmiTarget { port: 6230, cipher_suite: 3, ..IpmiTarget::new("192.0.2.7", "admin", file) }
    }

    #[test]
    fn ipmitool_argv_is_exact() {
        let t = IpmiTarget::new("10.0.0.12", "admin", "/x");
        assert_eq!(
            ipmitool_args(&t, Action::Off).join(" "),
            "-I lanplus -H 10.0.0.12 -p 623 -U admin -E -C 17 chassis power off"
        );
        assert_eq!(ipmitool_args(&t, Action::Status).last().unwrap(), "status");
    }

    #[test]
    fn parses_ipmitool_status() {
        let parse = |stdout: &str, stderr: &str| {
            parse_ipmi_status(&Answer {
                status: ExitStatus::from_raw(0),
                stdout: stdout.into(),
                message: clean_output(stdout.as_bytes(), stderr.as_bytes(), None),
            })
        };
        assert_eq!(parse("Chassis Power is off\n", "warning\n"), PowerState::Off);
        assert_eq!(parse("Chassis Power is on", ""), PowerState::On);
        assert_eq!(
            parse("Chassis Power is offish", ""),
            PowerState::Unknown("Chassis Power is offish".into())
        );
        assert_eq!(parse("", ""), PowerState::Unknown("no output".into()));
    }

    #[test]
    fn password_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "secret\n").unwrap();
        let mode = |m: u32| {
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
        };
        // Group or others may read it: refused at use too (it may have changed since start).
        mode(0o640);
        let msg = read_password(&p).err().unwrap().to_string();
        assert!(msg.contains("0640") && msg.contains("chmod 0600"), "{msg}");
        mode(0o600);
        assert_eq!(read_password(&p).ok().unwrap().0, b"secret");
        assert!(check_password_file(&p).is_ok());
        std::fs::write(&p, "secret").unwrap();
        assert_eq!(read_password(&p).ok().unwrap().0, b"secret");
        for bad in ["", "\n", "a\nb\n", "secret\n\n"] {
            std::fs::write(&p, bad).unwrap();
            assert!(read_password(&p).is_err(), "{bad:?} accepted");
        }
        let missing = dir.path().join("missing");
        let msg = read_password(&missing).err().unwrap().to_string();
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
    }

    #[test]
    fn missing_password_file_fails_at_once_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = target(dir.path(), "pw");
        t.password_file = dir.path().join("nope");
        let settings = FenceSettings {
            confirm_timeout: Duration::from_secs(30),
            ..fast_settings("true".into())
        };
        let start = Instant::now();
        match power_off_and_confirm(&FenceMethod::Ipmi(t), &settings) {
            AttemptOutcome::Failed { detail } => assert!(detail.contains("nope"), "{detail}"),
            other => panic!("{other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_ipmitool_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path(), "pw");
        let settings = fast_settings("/nonexistent/ipmitool".into());
        match power_off_and_confirm(&FenceMethod::Ipmi(t), &settings) {
            AttemptOutcome::Failed { detail } => assert!(detail.contains("cannot run"), "{detail}"),
            other => panic!("{other:?}"),
        }
    }

    /// A fake ipmitool that logs its argv and the password it got, echoes the password on
    /// stderr (as a careless program might) and reports a state kept in a file.
    fn fake_ipmitool(dir: &Path, honest: bool) -> PathBuf {
        let d = dir.display();
        let status = if honest { format!("cat {d}/state") } else { "echo on".into() };
        write_script(
            dir,
            "ipmitool",
            &format!(
                "echo \"$*\" >> {d}/argv\nprintf %s \"$IPMI_PASSWORD\" > {d}/env\n\
                 echo \"pw was $IPMI_PASSWORD\" >&2\n\
                 case \"$*\" in\n\
                 *'power off') echo off > {d}/state; echo 'Chassis Power Control: Down/Off';;\n\
                 *'power status') echo \"Chassis Power is $({status})\";;\n\
                 esac\n"
            ),
        )
    }

    #[test]
    fn password_goes_only_to_the_environment_and_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let fake = fake_ipmitool(dir.path(), true);
        let t = target(dir.path(), "hunter2-pw");
        let out = power_off_and_confirm(&FenceMethod::Ipmi(t), &fast_settings(fake));
        assert!(matches!(out, AttemptOutcome::ConfirmedOff { .. }), "{out:?}");
        let argv = std::fs::read_to_string(dir.path().join("argv")).unwrap();
        assert_eq!(
            argv.lines().collect::<Vec<_>>(),
            [
                "-I lanplus -H 192.0.2.7 -p 6230 -U admin -E -C 3 chassis power off",
                "-I lanplus -H 192.0.2.7 -p 6230 -U admin -E -C 3 chassis power status"
            ]
        );
        assert_eq!(std::fs::read_to_string(dir.path().join("env")).unwrap(), "hunter2-pw");
    }

    #[test]
    fn accepted_off_without_confirmation_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let fake = fake_ipmitool(dir.path(), false);
        let t = target(dir.path(), "hunter2-pw");
        match power_off_and_confirm(&FenceMethod::Ipmi(t), &fast_settings(fake)) {
            AttemptOutcome::Failed { detail } => {
                assert!(detail.contains("NOT confirmed"), "{detail}");
                assert!(detail.contains("still on"), "{detail}");
                assert!(detail.contains("pw was ***"), "{detail}");
                assert!(!detail.contains("hunter2"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn agent_options_are_validated() {
        let agent = |key: &str, value: &str| AgentTarget {
            program: "true".into(),
            options: vec![(key.into(), value.into())],
            password_file: None,
        };
        let settings = fast_settings("ipmitool".into());
        for (k, v) in
            [("a=b", "1"), ("", "1"), ("action", "on"), ("password", "x"), ("ip", "1\naction=on")]
        {
            let err = power_on(&FenceMethod::Agent(agent(k, v)), &settings).unwrap_err();
            assert!(matches!(err, FenceError::BadOption { .. }), "{k:?}: {err}");
        }
        assert!(power_on(&FenceMethod::Agent(agent("ip", "10.0.0.1")), &settings).is_ok());
    }

    #[test]
    fn output_is_squeezed_and_capped() {
        assert_eq!(clean_output(b"a\n b\n", b"  c\n", None), "a b c");
        let long = vec![b'x'; 5000];
        assert!(clean_output(&long, b"", None).len() < 1100);
        assert_eq!(replace_all(b"xpwxpw", b"pw", b"*"), b"x*x*");
    }
}
