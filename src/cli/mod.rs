//! Command-line interface: argument definitions and dispatch. Each command lives in its own file.

pub mod cloudstack;
mod init;
mod inspect;
pub mod keygen;
pub mod members;
mod ops;
pub mod restore;
pub mod text;
mod vms;

use clap::{Parser, Subcommand};
use std::fmt;
use std::path::PathBuf;

/// Exit codes shared by every command (`check` adds its own, see its help).
pub mod exit {
    pub const OK: i32 = 0;
    /// The command failed; the message says why and what to do.
    pub const FAILURE: i32 = 1;
    /// Wrong usage (clap's own code).
    pub const USAGE: i32 = 2;
}

#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError { message: message.into(), code: exit::FAILURE }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> CliError {
        CliError::new(e.to_string())
    }
}

pub type CliResult = Result<(), CliError>;

#[derive(Parser, Debug)]
#[command(
    name = "hbfence",
    version,
    about = "Storage heartbeat, watchdog self-fencing and BMC peer fencing for KVM hosts",
    long_about = "hbfence runs on every KVM host of a cluster. Each host writes a CRC-protected \
heartbeat into its own block of a shared volume every interval, pets the hardware watchdog only \
while its own lease is valid (and resets itself when its storage stalls), and a coordinator host \
powers off dead peers through their BMCs and records a `fenced` verdict that management software \
can trust.\n\nStart with `hbfence init --volume PATH` on one host, then `hbfence run` on every host \
(normally through the hbfence.service systemd unit).",
    after_help = "Exit codes: 0 success, 1 failure (the message says what to do), 2 usage error.\n\
See hbfence(8) and hbfence.toml(5)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create (or re-create) a heartbeat volume and store the cluster's timing in its header.
    #[command(long_about = "Create a heartbeat volume: a file (created with the right size when \
missing) or a block device (must be large enough). Every block is zeroed and the header stores a \
new cluster UUID and the timing parameters, which all hosts then share.\n\nUnsafe timing \
combinations are refused with the rule that they break. An existing hbfence volume is never \
overwritten without --force, and even with --force init watches the volume for one interval and \
refuses if any host's heartbeat moves: a live cluster is never wiped by accident.")]
    Init(init::InitArgs),
    /// Rewrite a damaged header (block 0) from the cluster's parameters; host blocks untouched.
    RestoreHeader(restore::RestoreArgs),
    /// Add or remove hosts of the cluster's membership (in every volume's header), or list it.
    Members(members::MembersArgs),
    /// Set or show the cluster-wide outage-survival switch (in every volume's header).
    OutageSurvival(members::OutageSurvivalArgs),
    /// Print the volume header and every non-empty block, decoded, with its CRC state.
    Dump(inspect::DumpArgs),
    /// One row per known host: state, sequence, incarnation, last write and its age.
    #[command(long_about = "One row per known host: state, sequence, incarnation, last write \
and its age; with --config (the default) also this host's daemon's view of every host.\n\n\
--health checks only this host's own agent, from the status file in [daemon] runtime_dir (no \
volume is read), prints one line and exits like a Nagios/Icinga plugin:\n\
0 OK: running, own lease valid, watchdog armed.\n\
1 WARNING: starting (probing), stopping (leaving), or running without the watchdog armed.\n\
2 CRITICAL: not running (no status file, its process gone, or the file not updated for 5 s: \
hung), doomed (self-fencing), or the own lease not valid.\n\
3 UNKNOWN: the configuration or the status file cannot be read.\n\
Without --health: 0 success, 1 failure, 2 usage error.")]
    Status(inspect::StatusArgs),
    /// For scripts: is HOST ALIVE, DEAD or FENCED? The exit code says it.
    #[command(
        long_about = "Prints ALIVE, DEAD, FENCED (or LEFT) for HOST, judged by this host's \
running daemon and the coordinator's verdicts on the volume.\n\n\
FENCED (exit 4): the coordinator confirmed HOST powered off (BMC), or HOST's watchdog guarantee \
expired: its VMs may be restarted elsewhere.\n\
DEAD (exit 3): no heartbeat progress for suspect_after, but not fenced yet: do NOT restart its VMs.\n\
ALIVE (exit 0): its heartbeat progresses.\n\
LEFT (exit 5): its agent stopped cleanly; it is not protected and never fenced.\n\
Exit 1: the question cannot be answered (daemon not running, unreadable volume).\n\n\
--cloudstack prints CloudStack's kvmheartbeat.sh -r lines (`=====> ALIVE <=====` / \
`=====> DEAD <======`) and exits 0; it prints DEAD only for a FENCED host, because CloudStack \
restarts the VMs of a DEAD host."
    )]
    Check(ops::CheckArgs),
    /// The VMs HOST ran at its last heartbeat (its published inventory), from the volumes.
    #[command(long_about = "Prints the VMs HOST published at its last heartbeat: UUID, name and \
state of every domain, the age of the list and whether it is complete (`overflow`: more domains \
ran than the list holds; `stale`: the host's latest collection failed, this is the last one it \
collected; `none`: the host publishes no inventory, which is not the same as no VMs). For a \
FENCED host this is what it ran when it stopped: the VMs to restart elsewhere.\n\nRead-only: \
works on any host and on a read-only mount, with --config or with --volume PATH (repeat for \
every volume).")]
    Vms(vms::VmsArgs),
    /// Fence HOST: poison pill in its mailbox (and BMC power-off if configured); waits for the verdict.
    #[command(
        long_about = "Writes a reset request into HOST's mailbox. HOST acknowledges it, stops \
petting its watchdog and resets itself; the coordinator records it fenced once the watchdog bound \
has passed. With BMC details for HOST in this host's config, HOST is also powered off through its \
BMC. --confirm-off records a host that an operator powered off by hand as fenced; it is refused \
unless the coordinator holds the host suspect (verdict fencing or fence-failed). A host counts as \
rejoined after the fence only with a new boot id."
    )]
    Fence(ops::FenceArgs),
    /// Clear HOST's mailbox and the coordinator's verdict about it.
    #[command(long_about = "Clear HOST's mailbox and end the coordinator's verdict about it: a \
fencing in progress is cancelled (the host is not judged again until its heartbeat moves), and a \
fenced or fence-failed verdict is withdrawn. A clear ends only what it could see: the message \
names the verdict table generation this command read, and a fenced verdict the coordinator \
reached after that read (a power-off confirmed while the command ran) stands, because the host \
is off; the command then says so and exits 1. Run it again to withdraw that verdict too. It \
reports the verdict cleared once the coordinator's table without it is on a write quorum of \
volumes (every reader's read quorum then shows it); on fewer it exits 1 and says how many \
volumes the withdrawal reached.")]
    Clear(ops::ClearArgs),
    /// Is the watchdog usable? Which driver, which timeouts, who holds it (without arming it).
    TestWatchdog(ops::TestWatchdogArgs),
    /// Write a new cluster key for the peer channel ([network] key_file); copy it to every host.
    #[command(long_about = "Writes 32 random bytes (from the kernel's getrandom) to PATH \
(default /etc/hbfence/cluster.key), mode 0600, created under a temporary name and renamed into \
place. Every host of the cluster needs the same key at its [network] key_file: copy it like \
corosync's authkey (owner root, mode 0600). An existing key is never replaced without --force.")]
    Keygen(keygen::KeygenArgs),
    /// Run the agent on this host (normally started by hbfence.service).
    #[command(long_about = "Run the agent: heartbeat on every configured volume, own lease, \
hardware watchdog, self-fencing, peer liveness and (on the coordinator) peer fencing. Logs go to \
syslog (the journal) and to stderr with --foreground, when stderr is a terminal, or when syslog is off or unavailable ([daemon] syslog = false). SIGTERM or \
SIGINT stops cleanly (the host writes `leaving`, disarms the watchdog and is never fenced); SIGHUP \
reloads peers and [fencing]; other sections need a restart.")]
    Run(RunArgs),
    /// Drop-in for CloudStack's kvmheartbeat.sh / kvmsmpheartbeat.sh (options -i -p -m -h -t -r -c).
    #[command(
        name = "cloudstack-heartbeat",
        long_about = "Drop-in for CloudStack's kvmheartbeat.sh and kvmsmpheartbeat.sh, called by \
the wrapper scripts in /usr/share/hbfence/cloudstack/ with CloudStack's own options.\n\n\
Without -r or -c: writes the current time (seconds) into MOUNT/KVMHA/hb-HOST_IP as the original \
does; exit 0, or 2 when the file cannot be written (with --require-mount, which the \
kvmheartbeat.sh wrapper passes: exit 1 when MOUNT is not a mount point).\n\
-r: prints `=====> DEAD <======` only for a host hbfence holds FENCED, `=====> ALIVE <=====` \
otherwise, as the first line, then why; always exit 0, within --deadline seconds even when the \
heartbeat volume hangs. HOST_IP is looked up in the `aliases` of [host] and [[peer]]. An unknown \
host, a stopped agent or an unreadable volume answers ALIVE, logs a warning and counts it in \
RUNTIME_DIR/cloudstack-warnings.json.\n\
-c: CloudStack's reboot request; logged and ignored (exit 0): hbfence fences this host itself."
    )]
    CloudstackHeartbeat(cloudstack::HeartbeatArgs),
    /// Print the shell completion script for SHELL (the packages install them).
    #[command(hide = true)]
    Completions(CompletionsArgs),
}

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// bash (to /usr/share/bash-completion/completions/hbfence) or zsh (to a directory of
    /// $fpath as `_hbfence`).
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum CompletionShell {
    Bash,
    Zsh,
}

/// The completion script for `shell`, generated from the command-line definition above.
pub fn completions(shell: CompletionShell) -> Vec<u8> {
    use clap::CommandFactory;
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "hbfence", &mut out);
    out
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Configuration file.
    #[arg(long, short = 'c', value_name = "PATH", default_value = crate::config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Make every check `run` makes before it arms anything (config, password files, volumes,
    /// watchdog device without opening it, sysrq trigger, hooks, event log, runtime dir), print
    /// a summary and exit with the code `run` would give (0, 69, 78); starts nothing.
    #[arg(long)]
    pub check: bool,
    /// Also log to stderr (default when stderr is a terminal).
    #[arg(long)]
    pub foreground: bool,
}

/// Parses the command line and runs the command; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Init(a) => init::run(&a),
        Command::RestoreHeader(a) => restore::run(&a),
        Command::Members(a) => members::members(&a),
        Command::OutageSurvival(a) => members::outage_survival(&a),
        Command::Dump(a) => inspect::dump(&a),
        Command::Status(a) => inspect::status(&a),
        Command::Check(a) => ops::check(&a),
        Command::Vms(a) => vms::run(&a),
        Command::Fence(a) => ops::fence(&a),
        Command::Clear(a) => ops::clear(&a),
        Command::TestWatchdog(a) => ops::test_watchdog(&a),
        Command::Keygen(a) => keygen::run(&a),
        Command::CloudstackHeartbeat(a) => cloudstack::run(&a),
        Command::Completions(a) => {
            use std::io::Write;
            std::io::stdout().write_all(&completions(a.shell)).map_err(CliError::from)
        }
        Command::Run(a) if a.check => inspect::run_check(&a),
        Command::Run(a) => {
            use std::io::IsTerminal;
            let stderr = a.foreground || std::io::stderr().is_terminal();
            return crate::daemon::run(&a.config, stderr);
        }
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("hbfence: error: {}", e.message);
            }
            e.code
        }
    }
}
