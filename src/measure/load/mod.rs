//! The load generator: many requests over C connections, every round trip
//! timed, results as a [`LoadReport`] (no printing here).
//!
//! # Two ways to send
//!
//! * **Closed loop** (default): each connection sends a request, waits for
//!   its reply, sends the next. It measures the best the pair can do, and
//!   it is what `echo-rtt` (the C reference client) does.
//! * **Open loop** (`rate`): the send times are fixed in advance by a
//!   [`Schedule`](crate::measure::histogram::Schedule) (R requests per
//!   second over all connections). At most one request is in flight per
//!   connection, as in wrk2: when a reply is late, the next request goes out
//!   late too, and its latency is counted from when it *should* have gone
//!   out (coordinated-omission correction, see [`crate::measure::histogram`]).
//!   Both views are kept in the report.
//!
//! # One engine, two loops
//!
//! Everything a load connection decides — when the next request is due,
//! the request's bytes, where a reply ends, whether it is right, late, lost
//! or a duplicate, what goes into the histograms — lives in [`core`], which
//! does no I/O and reads no clock (`now` is an argument), so it is tested
//! with scripted replies. Two loops feed it bytes and timestamps:
//!
//! * [`blocking`]: one OS thread per connection with blocking sockets, as
//!   the C reference client does: a wait for a reply is one system call
//!   (`recv`), where an async runtime needs two (`epoll_wait`, then `recv`).
//!   On loopback a round trip is a few µs, so this is plain TCP's and UDP's
//!   fast path.
//! * [`task`]: one tokio task per connection, over any async stream (TLS,
//!   a QUIC stream) or UDP socket.
//!
//! Open-loop send times are kept by one timer policy ([`timer`]) with a
//! sleeping back-end for threads and one for tasks. The server side has the
//! same shape: one sans-IO session (`crate::server::session`) driven by a
//! blocking and an async loop.
//!
//! # Messages
//!
//! Text mode sends `size` lowercase letters and `\n` (UDP: the same bytes
//! as one datagram) and expects exactly their uppercase back. The first
//! letters (up to 7) spell the request number in base 26 (`a` = 0), so a
//! UDP reply can be matched to its request even after losses. Framed mode
//! sends one request frame per message; the frame id and timestamp (the
//! intended send time) must come back unchanged.

pub mod blocking;
pub mod core;
pub mod task;
pub mod timer;

use crate::measure::histogram::{Latencies, Unit};
use crate::wire::HEADER_LEN;
use serde::Serialize;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The largest message a load run sends. Larger would risk both ends
/// blocking in `write` with full socket buffers (the client writes a whole
/// request before it reads), and no proto server accepts more anyway.
pub const MAX_SIZE: usize = 1 << 20;

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// After this many measured requests in total (split over connections).
    Count(u64),
    /// After this long of measurement (after the warm-up).
    Duration(Duration),
}

/// Everything that shapes a run: plain data, checked by [`LoadConfig::validate`].
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub connections: usize,
    /// Payload bytes per message (text: letters before the `\n`).
    pub size: usize,
    pub framed: bool,
    pub stop: Stop,
    /// Requests during this first stretch are sent but not recorded.
    pub warmup: Duration,
    /// Open loop at this many requests per second over all connections;
    /// `None` is a closed loop.
    pub rate: Option<f64>,
    /// Streams: longest wait for a reply before the connection counts as
    /// failed. Datagrams: a reply later than this counts as lost.
    pub timeout: Duration,
    pub unit: Unit,
}

/// A combination of settings the engine cannot run. Says what is wrong in
/// the engine's terms; the command line adds its flag names.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("a run needs at least one connection")]
    NoConnections,
    #[error("a message carries between 1 byte and {max} bytes (got {size})")]
    Size { size: usize, max: usize },
    #[error("a frame carries at most {max} payload bytes (got {size})")]
    FrameTooLarge { size: usize, max: usize },
    /// `overhead`: bytes of each message that are not payload.
    #[error("a UDP datagram carries at most {max} bytes, a {bytes}-byte message does not fit")]
    DatagramTooLarge {
        bytes: usize,
        max: usize,
        overhead: usize,
    },
    #[error("the request rate must be a positive number of requests per second (got {0})")]
    Rate(f64),
    #[error("a run needs at least one request")]
    ZeroCount,
    #[error("a run must last longer than 0")]
    ZeroDuration,
}

impl LoadConfig {
    /// Checks the combination of settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.connections == 0 {
            return Err(ConfigError::NoConnections);
        }
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(ConfigError::Size {
                size: self.size,
                max: MAX_SIZE,
            });
        }
        if self.framed && self.size > crate::wire::MAX_PAYLOAD {
            return Err(ConfigError::FrameTooLarge {
                size: self.size,
                max: crate::wire::MAX_PAYLOAD,
            });
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(ConfigError::Rate(rate));
            }
        }
        match self.stop {
            Stop::Count(0) => Err(ConfigError::ZeroCount),
            Stop::Duration(d) if d.is_zero() => Err(ConfigError::ZeroDuration),
            _ => Ok(()),
        }
    }

    /// [`validate`](Self::validate), and every message fits one datagram.
    pub fn validate_datagrams(&self) -> Result<(), ConfigError> {
        self.validate()?;
        let max = crate::wire::limits::MAX_UDP_PAYLOAD;
        if self.message_bytes() > max {
            return Err(ConfigError::DatagramTooLarge {
                bytes: self.message_bytes(),
                max,
                overhead: self.message_bytes() - self.size,
            });
        }
        Ok(())
    }

    /// Bytes one message takes in one direction (what MB/s counts): the
    /// letters and `\n` of a text line, or header and payload of a frame.
    pub fn message_bytes(&self) -> usize {
        if self.framed {
            HEADER_LEN + self.size
        } else {
            self.size + 1
        }
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Opening or setting up connection `connection` (0-based) failed.
    #[error("opening connection {} of {of}", .connection + 1)]
    Connect {
        connection: usize,
        of: usize,
        #[source]
        source: BoxError,
    },
}

/// Whatever error a connect function returns (io, TLS, QUIC, `anyhow`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why one connection stopped before the end of the run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    #[error("sending: {0}")]
    Send(String),
    #[error("receiving: {0}")]
    Receive(String),
    #[error("no reply within {}", crate::units::format_duration(*.0))]
    NoReply(Duration),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server closed the connection after a partial reply {0:?}")]
    ClosedMidReply(String),
    /// Framed mode: after a wrong frame the stream cannot be trusted.
    #[error("the server sent {0}")]
    WrongReply(String),
    /// UDP: an ICMP port-unreachable came back for one of our datagrams.
    #[error("connection refused (ICMP port unreachable)")]
    Refused,
    /// The connection's thread or task ended without a result.
    #[error("the {0} ended unexpectedly")]
    Crashed(&'static str),
}

/// A [`Failure`] and which connection it hit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} {}: {failure}", if *.datagrams { "socket" } else { "connection" }, .connection + 1)]
pub struct ConnectionFailure {
    /// 0-based.
    pub connection: usize,
    /// UDP sockets are called sockets, not connections.
    pub datagrams: bool,
    pub failure: Failure,
}

impl Serialize for ConnectionFailure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Live counters while the run goes on (for a progress display; the
/// engine only counts).
#[derive(Debug, Default)]
pub struct LoadProgress {
    /// Measured requests completed so far (replies, losses and failures).
    pub completed: AtomicU64,
    /// Set once every connection is open and the clock has started (ns on
    /// the process clock; 0 before).
    pub started_at: AtomicU64,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The settings of the run (bytes per message:
    /// [`LoadConfig::message_bytes`]).
    pub config: LoadConfig,
    /// Latency per request; in an open loop, counted from the intended
    /// send time (coordinated-omission corrected).
    pub latency: Latencies,
    /// Open loop only: the same requests counted from their actual send
    /// time, which hides stalls. Equal to `latency` in a closed loop.
    pub uncorrected: Latencies,
    /// Requests answered correctly or not, in the measured part.
    pub requests: u64,
    /// Requests sent during the warm-up (not in the histograms).
    pub warmup_requests: u64,
    /// Replies that were not the uppercase of their request.
    pub mismatches: u64,
    /// UDP: requests whose reply did not come back within the timeout.
    pub lost: u64,
    /// UDP: replies that came back after their request was counted lost.
    pub late: u64,
    /// UDP: extra copies of replies already received (the network, or the
    /// server receiving a duplicated request, delivered one twice).
    pub duplicates: u64,
    /// Open loop: scheduled requests never sent because the run ended
    /// while the client was still behind schedule.
    pub unsent: u64,
    /// Connections that failed (and stopped) during the run.
    pub failed_connections: u64,
    /// The first distinct failures, for the report.
    pub errors: Vec<ConnectionFailure>,
    /// From the end of the warm-up to the last measured reply.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Measured replies (correct or not) per second.
    pub fn requests_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.latency.count() as f64 / secs
        } else {
            0.0
        }
    }

    /// Megabytes (10⁶ bytes) per second in one direction, like iperf3 and
    /// `echo-rtt`: replies per second × bytes per message.
    pub fn megabytes_per_sec(&self) -> f64 {
        self.requests_per_sec() * self.config.message_bytes() as f64 / 1e6
    }

    /// Lost requests as a fraction of those that were measured.
    pub fn loss_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.lost as f64 / self.requests as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LoadConfig {
        LoadConfig {
            connections: 1,
            size: 8,
            framed: false,
            stop: Stop::Count(1),
            warmup: Duration::ZERO,
            rate: None,
            timeout: Duration::from_secs(1),
            unit: Unit::Nanos,
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert_eq!(config().validate(), Ok(()));
        let c = LoadConfig {
            size: 0,
            ..config()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Size { size: 0, .. })
        ));
        let c = LoadConfig {
            size: 70_000,
            framed: true,
            ..config()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::FrameTooLarge { size: 70_000, .. })
        ));
        let c = LoadConfig {
            rate: Some(0.0),
            ..config()
        };
        assert_eq!(c.validate(), Err(ConfigError::Rate(0.0)));
        let c = LoadConfig {
            stop: Stop::Count(0),
            ..config()
        };
        assert_eq!(c.validate(), Err(ConfigError::ZeroCount));
        let c = LoadConfig {
            connections: 0,
            ..config()
        };
        assert_eq!(c.validate(), Err(ConfigError::NoConnections));
    }

    #[test]
    fn a_datagram_must_hold_the_whole_message() {
        let max = crate::wire::limits::MAX_UDP_PAYLOAD;
        let fits = LoadConfig {
            size: max - 1,
            ..config()
        };
        assert_eq!(fits.validate_datagrams(), Ok(()));
        let framed = LoadConfig {
            size: max - 1,
            framed: true,
            ..config()
        };
        assert_eq!(
            framed.validate_datagrams(),
            Err(ConfigError::DatagramTooLarge {
                bytes: max - 1 + HEADER_LEN,
                max,
                overhead: HEADER_LEN
            })
        );
    }

    #[test]
    fn failures_say_which_connection() {
        let f = ConnectionFailure {
            connection: 1,
            datagrams: false,
            failure: Failure::NoReply(Duration::from_secs(5)),
        };
        assert_eq!(f.to_string(), "connection 2: no reply within 5s");
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!("connection 2: no reply within 5s")
        );
    }
}
