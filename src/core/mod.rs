//! The pure decision core: state machines fed with time and I/O results. Nothing in here
//! performs I/O, reads a clock or sleeps, so whole clusters can be simulated deterministically.

pub mod agent;
pub mod events;
pub mod format;
pub mod header;
pub mod inventory;
pub mod readplan;
pub mod timing;
pub mod view;
