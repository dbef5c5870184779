//! How many connections a server takes, and what a client over the limit
//! hears.
//!
//! Every connection costs the server resources the kernel rations: a file
//! descriptor (`ulimit -n`, RLIMIT_NOFILE) and, for plain TCP, a thread,
//! whose stack and guard pages are memory mappings (`vm.max_map_count`)
//! and which counts against `kernel.threads-max`, `kernel.pid_max` and
//! RLIMIT_NPROC. A server that runs into one of those limits fails in ugly
//! ways: `accept` returns EMFILE forever, or creating a thread aborts the
//! process and cuts every client. So the server counts its connections and
//! refuses the one over a limit *below* the first of the kernel's limits,
//! with a clear answer (`ERROR server busy`, a TLS alert, QUIC's
//! CONNECTION_REFUSED) instead of silence.
//!
//! A second, smaller limit per client address keeps one machine (or one
//! attacker opening thousands of slow connections, "slowloris") from
//! taking every slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Mappings one connection thread costs: its stack, the stack's guard
/// page, the alternate signal stack and its guard page (measured: 16 368
/// threads exhausted `vm.max_map_count` = 65 530).
pub const MAPPINGS_PER_THREAD: u64 = 4;

/// File descriptors (and threads, mappings) kept in reserve for the rest of
/// the process: listeners, the runtime, log files, certificate files.
pub const RESERVE: u64 = 256;

/// The kernel's limits that bound the number of connections, as read at
/// start-up; `None` where a limit could not be read.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProcessLimits {
    /// RLIMIT_NOFILE (soft): open file descriptors.
    pub open_files: Option<u64>,
    /// Descriptors open now.
    pub open_files_used: Option<u64>,
    /// `vm.max_map_count`: memory mappings per process.
    pub max_map_count: Option<u64>,
    /// Mappings in use now (lines of /proc/self/maps).
    pub mappings_used: Option<u64>,
    /// The fewest threads the kernel lets this process have: the minimum of
    /// `kernel.threads-max`, `kernel.pid_max` and RLIMIT_NPROC.
    pub max_threads: Option<u64>,
    /// Threads of this process now.
    pub threads_used: Option<u64>,
}

impl ProcessLimits {
    /// Reads the limits of the running process.
    pub fn read() -> ProcessLimits {
        let proc_number =
            |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
        let rlimit = |resource| -> Option<u64> {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes into the struct we pass.
            let rc = unsafe { libc::getrlimit(resource, &mut limit) };
            (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
        };
        let threads = [
            proc_number("/proc/sys/kernel/threads-max"),
            proc_number("/proc/sys/kernel/pid_max"),
            rlimit(libc::RLIMIT_NPROC),
        ];
        ProcessLimits {
            open_files: rlimit(libc::RLIMIT_NOFILE),
            open_files_used: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_map_count: proc_number("/proc/sys/vm/max_map_count"),
            mappings_used: std::fs::read_to_string("/proc/self/maps")
                .ok()
                .map(|m| m.lines().count() as u64),
            max_threads: threads.into_iter().flatten().min(),
            threads_used: std::fs::read_dir("/proc/self/task")
                .ok()
                .map(|d| d.count() as u64),
        }
    }

    /// The default connection limit: what the scarcest resource allows,
    /// minus what is already used and [`RESERVE`], times 3/4 for headroom.
    /// With `threads` (plain TCP: a thread per connection) the thread and
    /// mapping limits count too. At least 16, at most 1 000 000.
    pub fn default_max_connections(&self, threads: bool) -> usize {
        // The reserve is at most a quarter of a small limit (`ulimit -n 100`).
        let room = |limit: Option<u64>, used: Option<u64>, per_connection: u64| {
            limit.map(|l| l.saturating_sub(used.unwrap_or(0) + RESERVE.min(l / 4)) / per_connection)
        };
        let mut budgets = vec![room(self.open_files, self.open_files_used, 1)];
        if threads {
            budgets.push(room(
                self.max_map_count,
                self.mappings_used,
                MAPPINGS_PER_THREAD,
            ));
            budgets.push(room(self.max_threads, self.threads_used, 1));
        }
        let scarcest = budgets.into_iter().flatten().min().unwrap_or(1_000_000);
        (scarcest / 4 * 3).clamp(16, 1_000_000) as usize
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("server busy: {limit} connections open (the limit, --max-connections)")]
    ServerFull { limit: usize },
    #[error(
        "server busy: {limit} connections open from your address {addr} (the limit per address, --max-per-address)"
    )]
    AddressFull { addr: IpAddr, limit: usize },
    #[error("server busy: {0}")]
    Exhausted(String),
}

/// Counts open connections, in total and per client address.
#[derive(Debug)]
pub struct ConnectionLimiter {
    max_total: usize,
    max_per_address: usize,
    open: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionLimiter {
    pub fn new(max_total: usize, max_per_address: usize) -> ConnectionLimiter {
        ConnectionLimiter {
            max_total: max_total.max(1),
            max_per_address: max_per_address.max(1),
            open: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
        }
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }

    pub fn max_per_address(&self) -> usize {
        self.max_per_address
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A slot for one connection from `addr`, released when the permit is
    /// dropped; or why not.
    pub fn try_acquire(self: &Arc<Self>, addr: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let mut per_address = self
            .per_address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.open.load(Ordering::Relaxed) >= self.max_total {
            return Err(Refusal::ServerFull {
                limit: self.max_total,
            });
        }
        let from_addr = per_address.entry(addr).or_insert(0);
        if *from_addr >= self.max_per_address {
            return Err(Refusal::AddressFull {
                addr,
                limit: self.max_per_address,
            });
        }
        *from_addr += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionPermit {
            limiter: self.clone(),
            addr,
        })
    }

    fn release(&self, addr: IpAddr) {
        let mut per_address = self
            .per_address
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(n) = per_address.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                per_address.remove(&addr);
            }
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    addr: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limiter.release(self.addr);
    }
}

/// The line a text client over the limit reads before the server closes.
pub fn busy_line(refusal: &Refusal) -> String {
    format!("ERROR {refusal}; try again later\n")
}

/// A TLS alert record, sent in the clear before any handshake: a client
/// over the limit gets `internal_error` (TLS has no "busy" alert) at once
/// instead of a silent close.
///
/// ```text
/// +------+---------+--------+-------+-------------+
/// | 0x15 | 0x0303  | 0x0002 | level | description |
/// | alert| TLS 1.2 | length | fatal | 80          |
/// +------+---------+--------+-------+-------------+
/// ```
pub const TLS_BUSY_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 80];

/// Writes `refusal` to a freshly accepted, not yet read TCP socket without
/// blocking: an error frame if the client's first byte (already arrived)
/// is the frame magic, else the text line. Best effort: the client may
/// already be gone.
pub fn refuse_plain(stream: &std::net::TcpStream, refusal: &Refusal) {
    use std::io::Write;
    let mut first = [0u8; 1];
    let framed = stream.set_nonblocking(true).is_ok()
        && matches!(stream.peek(&mut first), Ok(1) if first[0] == crate::wire::MAGIC);
    let mut bytes = Vec::new();
    if framed {
        let _ = crate::wire::Frame::error(0, 0, &refusal.to_string()).encode(&mut bytes);
    } else {
        bytes = busy_line(refusal).into_bytes();
    }
    let mut stream = stream;
    let _ = stream.write(&bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Sends [`TLS_BUSY_ALERT`] without blocking (best effort).
pub fn refuse_tls(stream: &std::net::TcpStream) {
    use std::io::Write;
    let _ = stream.set_nonblocking(true);
    let mut stream = stream;
    let _ = stream.write(&TLS_BUSY_ALERT);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_counts_total_and_per_address() {
        let limiter = Arc::new(ConnectionLimiter::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limiter.try_acquire(a).unwrap();
        let _second = limiter.try_acquire(a).unwrap();
        assert_eq!(
            limiter.try_acquire(a).unwrap_err(),
            Refusal::AddressFull { addr: a, limit: 2 }
        );
        let _third = limiter.try_acquire(b).unwrap();
        assert_eq!(
            limiter.try_acquire(b).unwrap_err(),
            Refusal::ServerFull { limit: 3 }
        );
        drop(first);
        assert_eq!(limiter.open(), 2);
        let _again = limiter.try_acquire(a).unwrap();
        assert!(busy_line(&Refusal::ServerFull { limit: 3 }).starts_with("ERROR server busy"));
    }

    #[test]
    fn the_default_stays_below_the_scarcest_limit() {
        let limits = ProcessLimits {
            open_files: Some(20_000),
            open_files_used: Some(10),
            max_map_count: Some(65_530),
            mappings_used: Some(300),
            max_threads: Some(32_768),
            threads_used: Some(5),
        };
        // Threads: (65 530 - 300 - 256) / 4 = 16 243 → × 3/4 = 12 180.
        let with_threads = limits.default_max_connections(true);
        assert_eq!(with_threads, 16_243 / 4 * 3);
        assert!(with_threads < 16_368, "below the measured abort");
        // Without threads only descriptors count.
        assert_eq!(limits.default_max_connections(false), 19_734 / 4 * 3);
        assert_eq!(
            ProcessLimits::default().default_max_connections(true),
            750_000
        );
        assert!(ProcessLimits::read().default_max_connections(true) >= 16);
        // `ulimit -n 100`: 25 in reserve, 3/4 of the other 65.
        let small = ProcessLimits {
            open_files: Some(100),
            open_files_used: Some(10),
            ..ProcessLimits::default()
        };
        assert_eq!(small.default_max_connections(false), 65 / 4 * 3);
    }
}
