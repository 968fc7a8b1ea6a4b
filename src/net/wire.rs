//! The peer channel's datagrams: explicit little-endian encoding, one fixed length per message
//! type, and an HMAC-SHA256 under the cluster key over every byte before it (compared in
//! constant time). Pure: no socket, no clock.
//!
//! ```text
//! offset size field
//!      0    4 magic "HBFN"
//!      4    1 version (1)
//!      5    1 type: 1 challenge, 2 answer
//!      6    2 reserved, 0
//!      8   16 cluster UUID (the volume header's)
//!     24    4 sender host id
//!     28    4 receiver host id
//!     32   16 sender boot id
//!     48    8 sender incarnation
//!     56   16 nonce (challenge: fresh random; answer: the challenge's, echoed)
//!     72      answer only: 1 claim kind, 3 ms without granting a permit (claim 2; capped),
//!             4 the sender's members epoch, 8 lease remaining ms (claims 2 and 6 only)
//!    end   32 HMAC-SHA256(key, every byte before it)
//! ```

use crate::core::agent::Claim;
use crate::core::format::{BootId, ClusterId};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const MAGIC: [u8; 4] = *b"HBFN";
pub const VERSION: u8 = 1;
pub const KEY_LEN: usize = 32;
pub const MAC_LEN: usize = 32;
const HEADER_LEN: usize = 72;
pub const CHALLENGE_LEN: usize = HEADER_LEN + MAC_LEN;
pub const ANSWER_LEN: usize = HEADER_LEN + 16 + MAC_LEN;
/// Larger than any valid datagram, so an oversized one is seen as such (not cut to fit).
pub const MAX_DATAGRAM: usize = 512;

/// `no_permit_ms` has 3 bytes: about 4.6 hours (a judge needs less than its window).
pub const NO_PERMIT_MAX_MS: u32 = (1 << 24) - 1;

const TYPE_CHALLENGE: u8 = 1;
const TYPE_ANSWER: u8 = 2;

/// The cluster key (`[network] key_file`): 32 random bytes.
#[derive(Clone)]
pub struct Key([u8; KEY_LEN]);

impl Key {
    pub fn new(bytes: [u8; KEY_LEN]) -> Key {
        Key(bytes)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length: this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    Challenge,
    /// The claim, the sender's members epoch and how long it granted no permit (both 0: the
    /// datagram agents before outage survival send and accept; they refuse others).
    Answer(Claim, u32, u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub cluster: ClusterId,
    pub sender: u32,
    pub receiver: u32,
    pub sender_boot: BootId,
    pub sender_incarnation: u64,
    pub nonce: [u8; 16],
    pub body: Body,
}

/// Why a datagram was dropped; each reason has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reject {
    /// Shorter than its type's length.
    Truncated,
    /// Longer than its type's length.
    Oversized,
    /// Not our magic, version, type or reserved bytes: not an hbfence datagram of this version.
    Malformed,
    WrongCluster,
    /// Meant for another host id.
    WrongReceiver,
    /// The sender id is not a configured peer.
    UnknownSender,
    /// The MAC does not verify: wrong key or altered in transit (an authentication failure).
    BadMac,
}

impl Reject {
    pub const ALL: [Reject; 7] = [
        Reject::Truncated,
        Reject::Oversized,
        Reject::Malformed,
        Reject::WrongCluster,
        Reject::WrongReceiver,
        Reject::UnknownSender,
        Reject::BadMac,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::Oversized => "oversized",
            Reject::Malformed => "malformed",
            Reject::WrongCluster => "wrong_cluster",
            Reject::WrongReceiver => "wrong_receiver",
            Reject::UnknownSender => "unknown_sender",
            Reject::BadMac => "bad_mac",
        }
    }
}

fn claim_code(c: Claim) -> (u8, u64) {
    match c {
        Claim::Starting => (1, 0),
        Claim::LeaseValid { remaining_ms } => (2, remaining_ms),
        Claim::LeaseExpired => (3, 0),
        Claim::Doomed => (4, 0),
        Claim::Leaving => (5, 0),
        Claim::Permit { remaining_ms } => (6, remaining_ms),
    }
}

fn claim_of(kind: u8, remaining_ms: u64) -> Option<Claim> {
    Some(match (kind, remaining_ms) {
        (1, 0) => Claim::Starting,
        (2, ms) => Claim::LeaseValid { remaining_ms: ms },
        (3, 0) => Claim::LeaseExpired,
        (4, 0) => Claim::Doomed,
        (5, 0) => Claim::Leaving,
        (6, ms) => Claim::Permit { remaining_ms: ms },
        _ => return None,
    })
}

/// The datagram for `m`, authenticated under `key`.
pub fn encode(m: &Message, key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(ANSWER_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(match m.body {
        Body::Challenge => TYPE_CHALLENGE,
        Body::Answer(..) => TYPE_ANSWER,
    });
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&m.cluster);
    out.extend_from_slice(&m.sender.to_le_bytes());
    out.extend_from_slice(&m.receiver.to_le_bytes());
    out.extend_from_slice(&m.sender_boot);
    out.extend_from_slice(&m.sender_incarnation.to_le_bytes());
    out.extend_from_slice(&m.nonce);
    if let Body::Answer(claim, members_epoch, no_permit_ms) = m.body {
        let (kind, ms) = claim_code(claim);
        out.push(kind);
        out.extend_from_slice(&no_permit_ms.min(NO_PERMIT_MAX_MS).to_le_bytes()[..3]);
        out.extend_from_slice(&members_epoch.to_le_bytes());
        out.extend_from_slice(&ms.to_le_bytes());
    }
    let mut mac = key.mac();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

fn array16(b: &[u8], at: usize) -> [u8; 16] {
    b[at..at + 16].try_into().unwrap_or_default()
}

/// Decodes and authenticates a datagram for host `me` of `cluster`; `is_peer` says whether a
/// sender id is a configured peer. Every field is checked before it is believed, the MAC
/// before anything is returned.
pub fn decode(
    b: &[u8],
    key: &Key,
    cluster: &ClusterId,
    me: u32,
    is_peer: impl Fn(u32) -> bool,
) -> Result<Message, Reject> {
    if b.len() < 8 {
        return Err(Reject::Truncated);
    }
    if b[0..4] != MAGIC || b[4] != VERSION || b[6..8] != [0, 0] {
        return Err(Reject::Malformed);
    }
    let want = match b[5] {
        TYPE_CHALLENGE => CHALLENGE_LEN,
        TYPE_ANSWER => ANSWER_LEN,
        _ => return Err(Reject::Malformed),
    };
    if b.len() < want {
        return Err(Reject::Truncated);
    }
    if b.len() > want {
        return Err(Reject::Oversized);
    }
    if b[8..24] != cluster[..] {
        return Err(Reject::WrongCluster);
    }
    let (sender, receiver) = (u32_at(b, 24), u32_at(b, 28));
    if receiver != me {
        return Err(Reject::WrongReceiver);
    }
    if sender == me || !is_peer(sender) {
        return Err(Reject::UnknownSender);
    }
    let (signed, tag) = b.split_at(want - MAC_LEN);
    let mut mac = key.mac();
    mac.update(signed);
    mac.verify_slice(tag).map_err(|_| Reject::BadMac)?;
    let body = if b[5] == TYPE_CHALLENGE {
        Body::Challenge
    } else {
        let claim = claim_of(b[HEADER_LEN], u64_at(b, HEADER_LEN + 8)).ok_or(Reject::Malformed)?;
        let no_permit_ms =
            u32::from_le_bytes([b[HEADER_LEN + 1], b[HEADER_LEN + 2], b[HEADER_LEN + 3], 0]);
        Body::Answer(claim, u32_at(b, HEADER_LEN + 4), no_permit_ms)
    };
    Ok(Message {
        cluster: *cluster,
        sender,
        receiver,
        sender_boot: array16(b, 32),
        sender_incarnation: u64_at(b, 48),
        nonce: array16(b, 56),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CLUSTER: ClusterId = [0x5a; 16];

    fn key(b: u8) -> Key {
        Key::new([b; KEY_LEN])
    }

    fn msg(body: Body) -> Message {
        Message {
            cluster: CLUSTER,
            sender: 2,
            receiver: 1,
            sender_boot: [9; 16],
            sender_incarnation: 123_456,
            nonce: [0xc3; 16],
            body,
        }
    }

    fn decode1(b: &[u8], k: &Key) -> Result<Message, Reject> {
        decode(b, k, &CLUSTER, 1, |id| id == 2 || id == 3)
    }

    fn claims() -> impl Strategy<Value = Claim> {
        prop_oneof![
            Just(Claim::Starting),
            any::<u64>().prop_map(|ms| Claim::LeaseValid { remaining_ms: ms }),
            any::<u64>().prop_map(|ms| Claim::Permit { remaining_ms: ms }),
            Just(Claim::LeaseExpired),
            Just(Claim::Doomed),
            Just(Claim::Leaving),
        ]
    }

    fn bodies() -> impl Strategy<Value = Body> {
        prop_oneof![
            Just(Body::Challenge),
            (claims(), any::<u32>(), 0..=NO_PERMIT_MAX_MS)
                .prop_map(|(c, e, n)| Body::Answer(c, e, n))
        ]
    }

    #[test]
    fn lengths_are_fixed_per_type() {
        assert_eq!(encode(&msg(Body::Challenge), &key(1)).len(), CHALLENGE_LEN);
        assert_eq!(encode(&msg(Body::Answer(Claim::Doomed, 0, 0)), &key(1)).len(), ANSWER_LEN);
        const { assert!(ANSWER_LEN < MAX_DATAGRAM) };
    }

    #[test]
    fn every_rejection_reason_is_found() {
        let k = key(1);
        let good = encode(&msg(Body::Answer(Claim::Leaving, 0, 0)), &k);
        assert_eq!(decode1(&good, &k), Ok(msg(Body::Answer(Claim::Leaving, 0, 0))));
        assert_eq!(decode1(&good[..5], &k), Err(Reject::Truncated));
        assert_eq!(decode1(&good[..ANSWER_LEN - 1], &k), Err(Reject::Truncated));
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode1(&long, &k), Err(Reject::Oversized));
        let mut m = good.clone();
        m[0] = b'X';
        assert_eq!(decode1(&m, &k), Err(Reject::Malformed));
        let other = Message { cluster: [1; 16], ..msg(Body::Challenge) };
        assert_eq!(decode1(&encode(&other, &k), &k), Err(Reject::WrongCluster));
        let other = Message { receiver: 3, ..msg(Body::Challenge) };
        assert_eq!(decode1(&encode(&other, &k), &k), Err(Reject::WrongReceiver));
        let other = Message { sender: 7, ..msg(Body::Challenge) };
        assert_eq!(decode1(&encode(&other, &k), &k), Err(Reject::UnknownSender));
        let other = Message { sender: 1, ..msg(Body::Challenge) };
        assert_eq!(decode1(&encode(&other, &k), &k), Err(Reject::UnknownSender), "from myself");
        assert_eq!(decode1(&good, &key(2)), Err(Reject::BadMac), "another cluster key");
    }

    #[test]
    fn a_claim_code_out_of_range_is_malformed_even_under_a_valid_mac() {
        let k = key(1);
        let mut b = encode(&msg(Body::Answer(Claim::Starting, 0, 0)), &k);
        b[HEADER_LEN] = 9;
        let n = b.len() - MAC_LEN;
        let mut mac = k.mac();
        mac.update(&b[..n]);
        let tag = mac.finalize().into_bytes();
        b[n..].copy_from_slice(&tag);
        assert_eq!(decode1(&b, &k), Err(Reject::Malformed));
    }

    proptest! {
        #[test]
        fn round_trip(body in bodies(), nonce in any::<[u8; 16]>(), inc in any::<u64>(), boot in any::<[u8; 16]>()) {
            let m = Message { nonce, sender_incarnation: inc, sender_boot: boot, ..msg(body) };
            prop_assert_eq!(decode1(&encode(&m, &key(4)), &key(4)), Ok(m));
        }

        /// Any change of any byte (header, payload or MAC) is rejected: a flipped bit never
        /// passes as a different valid message.
        #[test]
        fn any_tampered_byte_is_rejected(body in bodies(), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let k = key(4);
            let mut b = encode(&msg(body), &k);
            let i = at.index(b.len());
            b[i] ^= flip;
            prop_assert!(decode1(&b, &k).is_err(), "byte {} ^ {:#x} accepted", i, flip);
        }

        #[test]
        fn a_wrong_key_is_an_authentication_failure(body in bodies(), a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            prop_assume!(a != b);
            let d = encode(&msg(body), &Key::new(a));
            prop_assert_eq!(decode1(&d, &Key::new(b)), Err(Reject::BadMac));
        }

        /// Whatever arrives, decoding returns (never panics).
        #[test]
        fn garbage_never_panics(b in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode1(&b, &key(1));
        }
    }
}
