//! Peer fencing drivers (placeholder, being written).
