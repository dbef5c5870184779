//! A tap on the cable: every packet the link carries, with the link's own
//! decision about it (delivered when, dropped, duplicated), for `proto
//! trace`; and faults by name ("drop the client's SYN").
//!
//! The forwarder (`forwarder.rs`) reports two moments per packet: when it
//! entered the link (read from the sender's TUN device: "sent") and when
//! it left it (written to the receiver's: "delivered"). A lost packet has
//! no second moment; a duplicated one has two.

use super::model::Verdict;
use crate::wire::dissect::Dir;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What happened to one packet on the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The packet entered the link; `fate` is the model's decision.
    Sent {
        dir: Dir,
        /// Arrival number on this direction (matches `Delivered::seq`).
        seq: u64,
        at: Instant,
        bytes: Vec<u8>,
        fate: SentFate,
    },
    /// The packet (or its duplicate) left the link at the far end.
    Delivered {
        dir: Dir,
        seq: u64,
        at: Instant,
        is_copy: bool,
    },
}

/// The link's decision about a packet as it entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentFate {
    /// Scheduled to leave at `due` (and a copy at `copy_due`).
    Scheduled {
        due: Instant,
        copy_due: Option<Instant>,
    },
    /// Lost by the random loss model.
    Lost,
    /// The bottleneck queue was full (drop-tail).
    QueueFull,
    /// Dropped on purpose by a `--drop` fault.
    Fault,
}

impl SentFate {
    pub fn from_verdict(v: Verdict) -> SentFate {
        match v {
            Verdict::Lost => SentFate::Lost,
            Verdict::QueueFull => SentFate::QueueFull,
            Verdict::Deliver { at, copy_at } => SentFate::Scheduled {
                due: at,
                copy_due: copy_at,
            },
        }
    }
}

/// "Drop the first packet going `dir` that carries `name`" (a TCP flag
/// set like SYN, a TLS message like ClientHello, a QUIC packet type like
/// Initial, or "data"), `count` times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub dir: Dir,
    pub name: String,
    pub count: u32,
}

/// Shared between the lab's two forwarder threads and the reader.
#[derive(Clone, Default)]
pub struct LinkTap {
    events: Arc<Mutex<Vec<LinkEvent>>>,
    faults: Arc<Mutex<Vec<Fault>>>,
}

/// Most packets a tap records (a trace is one connection, not a bulk transfer).
pub const MAX_EVENTS: usize = 200_000;

impl std::fmt::Debug for LinkTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkTap")
    }
}

impl PartialEq for LinkTap {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.events, &other.events)
    }
}

impl LinkTap {
    pub fn new(faults: Vec<Fault>) -> LinkTap {
        LinkTap {
            events: Arc::default(),
            faults: Arc::new(Mutex::new(faults)),
        }
    }

    pub(crate) fn record(&self, event: LinkEvent) {
        if let Ok(mut e) = self.events.lock() {
            if e.len() < MAX_EVENTS {
                e.push(event);
            }
        }
    }

    /// Whether a fault asks to drop this packet (and uses it up).
    pub(crate) fn should_drop(&self, dir: Dir, packet: &[u8]) -> bool {
        let Ok(mut faults) = self.faults.lock() else {
            return false;
        };
        if faults.iter().all(|f| f.dir != dir || f.count == 0) {
            return false;
        }
        let names = crate::wire::dissect::plaintext_names(packet);
        for f in faults.iter_mut() {
            if f.dir == dir && f.count > 0 && names.iter().any(|n| n.eq_ignore_ascii_case(&f.name))
            {
                f.count -= 1;
                return true;
            }
        }
        false
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<LinkEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}
