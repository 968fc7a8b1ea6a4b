//! Test harness: an OpenIPMI `ipmi_sim` BMC on 127.0.0.1 that simulates one host.
//!
//! The simulated chassis is a generated shell script, called by ipmi_sim through the
//! `chassis_control` hook of lan.conf as
//!   `SCRIPT 0x20 get power`        -> must print `power:1` or `power:0`, exit 0
//!   `SCRIPT 0x20 set power "0"`    -> power off (prints nothing, exit 0 = success)
//! It keeps the power state in the file `power` of the BMC's directory; power off kills -9 the
//! process whose pid is in `host_pid_file` (the "host"). ipmi_sim runs the script through
//! popen(), so paths must not contain spaces or quotes.
//!
//! ipmi_sim needs `mc_setbmc 0x20` plus `mc_add`/`mc_enable` in its command file before it
//! opens the LAN port; it supports cipher suite 3 (not 17), so clients must pass `-C 3`.
#![allow(dead_code)]

use std::fs;
use std::io;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How the simulated chassis answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chassis {
    /// Powers off (killing the host) and reports the real state.
    Honest,
    /// Accepts every power command with success but does nothing: the host keeps running and
    /// the status always says on (the BMC that S8 guards against).
    LiesAboutOff,
}

pub struct SimBmc {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

const START_TIMEOUT: Duration = Duration::from_secs(10);

impl SimBmc {
    /// Starts an honest BMC whose host is powered on.
    pub fn start(
        dir: &Path,
        port: u16,
        username: &str,
        password: &str,
        host_pid_file: &Path,
    ) -> io::Result<SimBmc> {
        SimBmc::start_with(dir, port, username, password, host_pid_file, Chassis::Honest)
    }

    /// Writes lan.conf, the command file and the chassis script into `dir`, starts ipmi_sim and
    /// returns once it answers `chassis power status`.
    pub fn start_with(
        dir: &Path,
        port: u16,
        username: &str,
        password: &str,
        host_pid_file: &Path,
        chassis: Chassis,
    ) -> io::Result<SimBmc> {
        for (what, text) in [
            ("dir", dir.to_string_lossy().as_ref()),
            ("host_pid_file", host_pid_file.to_string_lossy().as_ref()),
            ("username", username),
            ("password", password),
        ] {
            if text.is_empty() || text.contains(|c: char| c.is_whitespace() || "\"'\\".contains(c))
            {
                return Err(invalid(format!("{what} {text:?} is empty or has spaces/quotes")));
            }
        }
        let state_dir = dir.join("state");
        fs::create_dir_all(&state_dir)?;
        let power = dir.join("power");
        fs::write(&power, "1\n")?;

        let script = dir.join("chassis-control.sh");
        crate::script::write_executable(
            &script,
            &chassis_script(&power, host_pid_file, &dir.join("chassis.log"), chassis),
        )?;

        let lan_conf = dir.join("lan.conf");
        fs::write(
            &lan_conf,
            format!(
                "name \"hbfence-sim\"\n\
                 set_working_mc 0x20\n\
                 \x20 startlan 1\n\
                 \x20   addr 127.0.0.1 {port}\n\
                 \x20   priv_limit admin\n\
                 \x20   allowed_auths_callback none md2 md5 straight\n\
                 \x20   allowed_auths_user none md2 md5 straight\n\
                 \x20   allowed_auths_operator none md2 md5 straight\n\
                 \x20   allowed_auths_admin none md2 md5 straight\n\
                 \x20   guid a123456789abcdefa123456789abcdef\n\
                 \x20 endlan\n\
                 \x20 chassis_control \"{} 0x20\"\n\
                 \x20 user 2 true \"{username}\" \"{password}\" admin 10 none md2 md5 straight\n",
                script.display()
            ),
        )?;
        let commands = dir.join("sim.emu");
        fs::write(
            &commands,
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\n\
             mc_enable 0x20\n",
        )?;

        let log = fs::File::create(dir.join("ipmi_sim.log"))?;
        let child = Command::new("ipmi_sim")
            .arg("-n")
            .arg("-c")
            .arg(&lan_conf)
            .arg("-f")
            .arg(&commands)
            .arg("-s")
            .arg(&state_dir)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut bmc = SimBmc { child: Some(child), port, dir: dir.to_path_buf() };
        bmc.wait_ready(username, password)?;
        Ok(bmc)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The power state the chassis script keeps (what a real BMC would physically know).
    pub fn power_is_on(&self) -> bool {
        fs::read_to_string(self.dir.join("power")).map(|s| s.trim() == "1").unwrap_or(false)
    }

    /// Changes the power state behind the BMC's back (someone pressed the power button).
    pub fn set_power(&self, on: bool) {
        fs::write(self.dir.join("power"), if on { "1\n" } else { "0\n" }).expect("write power");
    }

    /// Every chassis script call so far (`<device> get power`, `<device> set power 0`, ...).
    pub fn chassis_calls(&self) -> Vec<String> {
        let log = fs::read_to_string(self.dir.join("chassis.log")).unwrap_or_default();
        log.lines().map(str::to_string).collect()
    }

    /// Kills ipmi_sim: the BMC becomes unreachable.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until ipmi_sim has bound its UDP port and answers an authenticated status query.
    fn wait_ready(&mut self, username: &str, password: &str) -> io::Result<()> {
        let start = Instant::now();
        let mut bound = false;
        let mut last = String::from("port not bound yet");
        while start.elapsed() < START_TIMEOUT {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(io::Error::other(format!(
                    "ipmi_sim exited at start ({status}); log: {}",
                    fs::read_to_string(self.dir.join("ipmi_sim.log")).unwrap_or_default()
                )));
            }
            // Probing the port with a packet before ipmi_sim binds it would cost ipmitool a 1 s
            // retransmit, so first watch the socket table.
            bound = bound || udp_port_bound(self.port);
            if bound {
                match ipmitool_status(self.port, username, password, Duration::from_secs(2)) {
                    Ok(out) if out.contains("Chassis Power is") => return Ok(()),
                    Ok(out) => last = out,
                    Err(e) => last = e.to_string(),
                }
            }
            thread::sleep(Duration::from_millis(5));
        }
        self.stop();
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("ipmi_sim on port {} not ready after {START_TIMEOUT:?}: {last}", self.port),
        ))
    }
}

impl Drop for SimBmc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn chassis_script(power: &Path, host_pid_file: &Path, log: &Path, chassis: Chassis) -> String {
    let lie = u8::from(chassis == Chassis::LiesAboutOff);
    format!(
        r#"#!/bin/sh
# ipmi_sim chassis_control hook: $0 DEVICE get PARM... | $0 DEVICE set PARM VALUE...
power='{power}'
host_pid_file='{pid}'
lie={lie}
echo "$*" >> '{log}'
shift
op=$1
shift
case "$op" in
get)
    for parm in "$@"; do
        case "$parm" in
        power)
            if [ "$lie" = 1 ]; then echo "power:1"; else echo "power:$(cat "$power")"; fi ;;
        boot) echo "boot:default" ;;
        *) echo "Invalid parameter: $parm"; exit 1 ;;
        esac
    done ;;
set)
    while [ $# -ge 2 ]; do
        parm=$1; val=$2; shift 2
        [ "$lie" = 1 ] && continue
        case "$parm" in
        power)
            if [ "$val" = 0 ]; then
                if [ -s "$host_pid_file" ]; then kill -9 "$(cat "$host_pid_file")" 2>/dev/null; fi
                echo 0 > "$power"
            else
                echo 1 > "$power"
            fi ;;
        reset|boot|shutdown|identify) ;;
        *) echo "Invalid parameter: $parm"; exit 1 ;;
        esac
    done ;;
*) echo "Unknown operation: $op"; exit 1 ;;
esac
"#,
        power = power.display(),
        pid = host_pid_file.display(),
        log = log.display(),
    )
}

/// Is something listening on 127.0.0.1:`port` (UDP)?
fn udp_port_bound(port: u16) -> bool {
    let needle = format!("0100007F:{port:04X}");
    fs::read_to_string("/proc/net/udp")
        .map(|table| table.lines().any(|l| l.split_whitespace().nth(1) == Some(needle.as_str())))
        .unwrap_or(false)
}

/// `ipmitool chassis power status` against the simulator, killed after `timeout`.
/// Ok holds stdout+stderr whatever the exit status.
pub fn ipmitool_status(
    port: u16,
    username: &str,
    password: &str,
    timeout: Duration,
) -> io::Result<String> {
    let mut child = Command::new("ipmitool")
        .args(["-I", "lanplus", "-H", "127.0.0.1", "-p", &port.to_string(), "-U", username])
        .args(["-E", "-C", "3", "chassis", "power", "status"])
        .env("IPMI_PASSWORD", password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(io::ErrorKind::TimedOut, "ipmitool timed out"));
        }
        thread::sleep(Duration::from_millis(5));
    }
    // Output is a line or two, far below a pipe buffer: reading after exit cannot deadlock.
    let out = child.wait_with_output()?;
    Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// One honest BMC per host 1..=n, laid out as the cluster harness lays out its hosts under
/// `base`: `bmc{id}/`, the password in `bmc{id}.pw` (mode 0600), power off = kill -9 of the
/// pid in `host{id}/agent.pid`. Returns the BMCs and, for each, what `config(port, password
/// file)` makes of it (the harness's `BmcConfig`, which this module cannot name).
pub fn start_for_hosts<C>(
    base: &Path,
    n: u32,
    username: &str,
    password: &str,
    config: impl Fn(u16, PathBuf) -> C,
) -> io::Result<(Vec<SimBmc>, Vec<C>)> {
    let (mut bmcs, mut configs) = (Vec::new(), Vec::new());
    for id in 1..=n {
        let dir = base.join(format!("bmc{id}"));
        fs::create_dir_all(&dir)?;
        let pid_file = base.join(format!("host{id}/agent.pid"));
        fs::create_dir_all(pid_file.parent().unwrap())?;
        // A port found free a moment ago may have been taken since (another test's BMC).
        let mut started = SimBmc::start(&dir, free_udp_port(), username, password, &pid_file);
        for _ in 0..3 {
            if started.is_ok() {
                break;
            }
            started = SimBmc::start(&dir, free_udp_port(), username, password, &pid_file);
        }
        let bmc = started?;
        let password_file = base.join(format!("bmc{id}.pw"));
        fs::write(&password_file, format!("{password}\n"))?;
        fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600))?;
        configs.push(config(bmc.port(), password_file));
        bmcs.push(bmc);
    }
    Ok((bmcs, configs))
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("bind a UDP port").port()
}

/// Why BMC tests cannot run here (ipmi_sim or ipmitool missing), if they cannot.
pub fn tools_missing() -> Option<String> {
    let missing: Vec<&str> = ["ipmi_sim", "ipmitool"]
        .into_iter()
        .filter(|tool| {
            let path = std::env::var_os("PATH").unwrap_or_default();
            !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
        })
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "{} not found in PATH (apt-get install openipmi ipmitool)",
            missing.join(", ")
        ))
    }
}

/// True when the BMC tools are present. Otherwise prints why the test is skipped and returns
/// false, or panics when `CI=true` (CI must not silently skip these tests).
pub fn require_tools(test: &str) -> bool {
    match tools_missing() {
        None => true,
        Some(reason) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: {reason}, and CI=true forbids skipping")
        }
        Some(reason) => {
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}
