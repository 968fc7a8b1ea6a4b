//! hbfence: storage heartbeat, watchdog self-fencing and BMC peer fencing for KVM hosts.
//!
//! Layout: `core` is the pure decision logic (no I/O, fed with time and I/O results);
//! `volume`, `watchdog`, `fence`, `events` and `net` (the peer channel) are thin drivers; `daemon` wires them to the core;
//! `cli` implements the commands; `sys` holds every `unsafe` block, ioctl and raw syscall.

pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod events;
pub mod fence;
pub mod inventory;
pub mod logging;
pub mod net;
pub mod preflight;
pub mod report;
pub mod sys;
pub mod volume;
pub mod watchdog;
