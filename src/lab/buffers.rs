//! Socket-buffer limits of the two hosts, sized to the link.
//!
//! TCP can have at most one *window* of data in flight per round trip, so
//! its throughput is at most `window ÷ RTT`. To fill a link the window must
//! reach the **bandwidth-delay product** (BDP = rate × RTT): the bytes that
//! are "on the wire" at any moment. A 1 Gbit/s × 100 ms path holds
//! 12.5 MB; a 50 Mbit/s × 100 ms path 625 kB.
//!
//! The window is capped by socket buffers: the receiver advertises at most
//! what its receive buffer can hold (about half of it, the rest is
//! bookkeeping), and the sender must keep every unacknowledged byte in its
//! send buffer. Linux caps both with per-namespace sysctls:
//!
//! ```text
//!   net.ipv4.tcp_rmem = min default max   receive buffer, auto-tuned up to max
//!   net.ipv4.tcp_wmem = min default max   send buffer, auto-tuned up to max
//!   net.core.rmem_max / wmem_max          the most SO_RCVBUF / SO_SNDBUF may ask
//!   net.core.rmem_default / wmem_default  what a UDP (QUIC) socket starts with
//! ```
//!
//! The kernel's defaults (tcp_wmem max 4 MB; tcp_rmem max 6 MB, 32 MB on
//! recent kernels) suit a LAN, not a long fat link. So the lab sizes each
//! namespace's TCP limits to the configured link, unless asked to keep the
//! kernel's defaults (to *show* the window limit). The values are written
//! from a thread inside each namespace, where they apply to that host only,
//! and read back from there, so what proto prints is what the kernel holds.
//! The `net.core` values belong to the whole machine (read-only inside a
//! namespace): they are reported, never changed; QUIC's sockets go past
//! them with SO_RCVBUFFORCE where allowed (a root lab), else ask with
//! SO_RCVBUF and get at most `rmem_max` (a rootless lab, which says so).

use super::netns::NetNs;
use super::LabConfig;
use serde::Serialize;
use std::io;
use std::time::Duration;

/// How the lab sets the hosts' socket-buffer limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostBuffers {
    /// Large enough for a window of 2 × (BDP + the bottleneck queue).
    #[default]
    Sized,
    /// Leave the kernel's defaults alone.
    Kernel,
    /// This many bytes as the maximum of every buffer.
    Fixed(u64),
}

/// The rate assumed for the BDP when the link has no `--rate`: about what
/// the forwarder carries at MTU 1500 on a small machine.
pub const ASSUMED_RATE_BPS: u64 = 1_000_000_000;
/// Never set a limit above this (the sysctls are signed 32-bit).
const MAX_BUFFER: u64 = 1 << 30;

/// Parses `--host-buffers`: `sized`, `kernel`, or a size such as `64M`.
pub fn parse_host_buffers(text: &str) -> Result<HostBuffers, String> {
    match text.trim() {
        "sized" | "auto" => Ok(HostBuffers::Sized),
        "kernel" | "default" | "defaults" => Ok(HostBuffers::Kernel),
        size => {
            let bytes = crate::units::parse_size(size).map_err(|e| {
                format!("{e} (or use `sized` to fit the link, `kernel` for the kernel's defaults)")
            })? as u64;
            if !(4096..=MAX_BUFFER).contains(&bytes) {
                return Err(format!("{text:?}: must be between 4K and 1G"));
            }
            Ok(HostBuffers::Fixed(bytes))
        }
    }
}

/// The bandwidth-delay product of the configured link in bytes, with the
/// rate and round trip it was computed from. The slower direction's rate
/// limits a transfer either way; the RTT is the sum of both one-way delays.
pub fn bdp(config: &LabConfig) -> (u64, u64, Duration) {
    let up = &config.client_to_server;
    let down = &config.server_to_client;
    let rate = match (up.rate_bps, down.rate_bps) {
        (Some(a), Some(b)) => a.min(b),
        (Some(r), None) | (None, Some(r)) => r,
        (None, None) => ASSUMED_RATE_BPS,
    };
    let rtt = up.delay + down.delay;
    let bytes = (rate as f64 / 8.0 * rtt.as_secs_f64()).round() as u64;
    (bytes, rate, rtt)
}

/// The TUN device's transmit queue, in packets: the host's own queue
/// between the sending kernel and the forwarder, not part of the emulated
/// link. TUN lets go of each packet's socket accounting on entry (it may
/// hold a packet indefinitely), so TCP's own brake on queued bytes (TCP
/// small queues) does not apply, and a sender bursting a window's worth at
/// memory speed overflows the kernel's usual 1000 packets long before the
/// forwarder falls behind on average: at 1 Gbit/s × 300 ms that dropped
/// 65 000 packets in 15 s and halved the goodput (41 % → 75 % of the link,
/// 93 % after slow start, with no host drops at 30 000 packets). Twice the
/// BDP in packets holds any window the sized buffers allow; the forwarder
/// reads as fast as it can, so a long queue here costs only memory, and only
/// while the forwarder is behind.
pub fn tun_queue_packets(config: &LabConfig) -> u32 {
    const KERNEL_DEFAULT: u64 = 1000;
    const MOST: u64 = 100_000;
    let (bdp, _, _) = bdp(config);
    let packets = 2 * bdp / u64::from(config.mtu.max(576));
    packets.clamp(KERNEL_DEFAULT, MOST) as u32
}

/// The largest window the link can usefully hold: one BDP on the wire plus
/// a full bottleneck queue, in bytes.
fn path_capacity(config: &LabConfig) -> u64 {
    let (bdp, _, _) = bdp(config);
    let queue = |l: &super::LinkConfig| {
        if l.rate_bps.is_some() {
            l.queue_packets as u64 * u64::from(config.mtu)
        } else {
            0
        }
    };
    bdp + queue(&config.client_to_server).max(queue(&config.server_to_client))
}

/// The buffer maximum `Sized` asks for: room for a window of twice the
/// path's capacity, and the receive window is about half the buffer, so
/// four times the capacity (never less than 4 MiB, never above 1 GiB).
pub fn sized_buffer(config: &LabConfig) -> u64 {
    (4 * path_capacity(config)).clamp(4 << 20, MAX_BUFFER)
}

/// What one host's kernel holds, read back from `/proc/sys` inside it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BufferLimits {
    /// `net.ipv4.tcp_rmem`: min, default, max (bytes).
    pub tcp_rmem: [u64; 3],
    /// `net.ipv4.tcp_wmem`: min, default, max (bytes).
    pub tcp_wmem: [u64; 3],
    /// `net.core.rmem_max`: the largest SO_RCVBUF a program may set.
    pub rmem_max: u64,
    /// `net.core.wmem_max`: the largest SO_SNDBUF a program may set.
    pub wmem_max: u64,
    /// `net.core.rmem_default`: a UDP socket's receive buffer.
    pub rmem_default: u64,
    /// `net.core.wmem_default`: a UDP socket's send buffer.
    pub wmem_default: u64,
}

/// The limits both hosts ended up with, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostBufferReport {
    /// "sized", "kernel" or "fixed".
    pub mode: &'static str,
    /// The link's bandwidth-delay product in bytes (rate × RTT).
    pub bdp_bytes: u64,
    /// The rate the BDP was computed with (bit/s); assumed when the link has none.
    pub bdp_rate_bps: u64,
    pub rate_assumed: bool,
    pub client: BufferLimits,
    pub server: BufferLimits,
    /// Why the sized limits could not be set, if they could not (the lab
    /// then runs with what the kernel holds, printed above).
    pub note: Option<String>,
}

impl HostBufferReport {
    /// The most a TCP receiver on the server host can advertise, roughly:
    /// half its receive buffer's maximum.
    pub fn server_window_bytes(&self) -> u64 {
        self.server.tcp_rmem[2] / 2
    }

    /// One line for the link description.
    pub fn describe(&self) -> String {
        let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
        let why = match self.mode {
            "sized" => format!(
                "sized to the link (BDP {}{})",
                mb(self.bdp_bytes),
                if self.rate_assumed {
                    format!(" at an assumed {} Gbit/s", self.bdp_rate_bps as f64 / 1e9)
                } else {
                    String::new()
                }
            ),
            "kernel" => format!("the kernel's defaults (BDP {})", mb(self.bdp_bytes)),
            _ => format!("set by --host-buffers (BDP {})", mb(self.bdp_bytes)),
        };
        let s = &self.server;
        let c = &self.client;
        format!(
            "host buffers: {why}; tcp_rmem max {} (server), tcp_wmem max {} (client); machine-wide rmem_max {}, wmem_max {}{}",
            mb(s.tcp_rmem[2]),
            mb(c.tcp_wmem[2]),
            mb(s.rmem_max),
            mb(c.wmem_max),
            self.note.as_ref().map_or(String::new(), |n| format!(" ({n})"))
        )
    }
}

const TCP_RMEM: &str = "net/ipv4/tcp_rmem";
const TCP_WMEM: &str = "net/ipv4/tcp_wmem";
const RMEM_MAX: &str = "net/core/rmem_max";
const WMEM_MAX: &str = "net/core/wmem_max";
const RMEM_DEFAULT: &str = "net/core/rmem_default";
const WMEM_DEFAULT: &str = "net/core/wmem_default";

fn read_numbers(path: &str) -> io::Result<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/sys/{path}"))?;
    text.split_whitespace()
        .map(|n| {
            n.parse()
                .map_err(|_| io::Error::other(format!("/proc/sys/{path}: unexpected {n:?}")))
        })
        .collect()
}

fn read_one(path: &str) -> io::Result<u64> {
    read_numbers(path)?
        .first()
        .copied()
        .ok_or_else(|| io::Error::other(format!("/proc/sys/{path} is empty")))
}

fn read_triple(path: &str) -> io::Result<[u64; 3]> {
    match read_numbers(path)?[..] {
        [a, b, c] => Ok([a, b, c]),
        _ => Err(io::Error::other(format!(
            "/proc/sys/{path}: expected three numbers"
        ))),
    }
}

/// Reads this thread's namespace's limits.
pub fn read_limits() -> io::Result<BufferLimits> {
    Ok(BufferLimits {
        tcp_rmem: read_triple(TCP_RMEM)?,
        tcp_wmem: read_triple(TCP_WMEM)?,
        rmem_max: read_one(RMEM_MAX)?,
        wmem_max: read_one(WMEM_MAX)?,
        rmem_default: read_one(RMEM_DEFAULT)?,
        wmem_default: read_one(WMEM_DEFAULT)?,
    })
}

/// Sets this thread's namespace's TCP maxima to `max` bytes; `raise_only`
/// keeps a kernel default that is already larger.
///
/// `net.core.*mem_*` cannot be set here: Linux keeps them for the whole
/// machine (a namespace sees them read-only), and the lab never changes the
/// machine's settings. A UDP (QUIC) socket that needs more than `rmem_max`
/// asks with SO_RCVBUFFORCE / SO_SNDBUFFORCE instead, which the lab's
/// CAP_NET_ADMIN allows in a root lab (see [`size_socket_buffers`]).
fn set_limits(max: u64, raise_only: bool) -> io::Result<()> {
    for path in [TCP_RMEM, TCP_WMEM] {
        let [min, default, old_max] = read_triple(path)?;
        let max = if raise_only { old_max.max(max) } else { max };
        let value = format!("{} {} {max}", min.min(max), default.min(max));
        std::fs::write(format!("/proc/sys/{path}"), &value).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("writing {value:?} to /proc/sys/{path}: {e}"),
            )
        })?;
    }
    Ok(())
}

/// What a socket's buffers ended up as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketBuffers {
    /// SO_RCVBUF / SO_SNDBUF as read back (the kernel reports twice what
    /// was asked: half is bookkeeping).
    pub receive: u64,
    pub send: u64,
    /// Whether SO_RCVBUFFORCE / SO_SNDBUFFORCE were allowed; if not, the
    /// plain options were used and `net.core.rmem_max`/`wmem_max` capped them.
    pub forced: bool,
}

fn set_int(fd: std::os::fd::RawFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a c_int that lives across the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_int(fd: std::os::fd::RawFd, option: libc::c_int) -> io::Result<u64> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid for writing.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v.max(0) as u64)
}

/// Gives a socket (typically QUIC's UDP socket) `bytes` of receive and send
/// buffer, beyond `net.core.rmem_max`/`wmem_max` if allowed.
///
/// The FORCE variants need CAP_NET_ADMIN over the *initial* network
/// namespace: a root lab has it; a rootless lab (a user namespace) has
/// CAP_NET_ADMIN only over its own namespaces, so the kernel refuses
/// (EPERM). Then the plain SO_RCVBUF / SO_SNDBUF ask for the same and the
/// kernel grants at most the machine-wide maxima; `forced` says which
/// happened, and the sizes are read back.
pub fn size_socket_buffers(fd: std::os::fd::RawFd, bytes: u64) -> io::Result<SocketBuffers> {
    let value = bytes.min(i32::MAX as u64 / 2) as libc::c_int;
    let forced = match set_int(fd, libc::SO_RCVBUFFORCE, value)
        .and_then(|()| set_int(fd, libc::SO_SNDBUFFORCE, value))
    {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            set_int(fd, libc::SO_RCVBUF, value)?;
            set_int(fd, libc::SO_SNDBUF, value)?;
            false
        }
        Err(e) => return Err(e),
    };
    Ok(SocketBuffers {
        receive: get_int(fd, libc::SO_RCVBUF)?,
        send: get_int(fd, libc::SO_SNDBUF)?,
        forced,
    })
}

/// Applies `config.host_buffers` inside both namespaces and reads back
/// what they hold.
pub fn apply(config: &LabConfig, client: &NetNs, server: &NetNs) -> io::Result<HostBufferReport> {
    let max = match config.host_buffers {
        HostBuffers::Sized => Some((sized_buffer(config), true)),
        HostBuffers::Fixed(bytes) => Some((bytes, false)),
        HostBuffers::Kernel => None,
    };
    // Sizing is best effort when automatic (the lab still works without
    // it, and says so); an explicit size that cannot be set is an error.
    let note = std::sync::Mutex::new(None);
    let on_host = |ns: &NetNs| -> io::Result<BufferLimits> {
        ns.run(|| {
            if let Some((max, raise_only)) = max {
                match set_limits(max, raise_only) {
                    Ok(()) => {}
                    Err(e) if config.host_buffers == HostBuffers::Sized => {
                        if let Ok(mut n) = note.lock() {
                            *n = Some(format!("could not size them: {e}"));
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            read_limits()
        })?
    };
    let (bdp_bytes, bdp_rate_bps, _) = bdp(config);
    Ok(HostBufferReport {
        mode: match config.host_buffers {
            HostBuffers::Sized => "sized",
            HostBuffers::Kernel => "kernel",
            HostBuffers::Fixed(_) => "fixed",
        },
        bdp_bytes,
        bdp_rate_bps,
        rate_assumed: config.client_to_server.rate_bps.is_none()
            && config.server_to_client.rate_bps.is_none(),
        client: on_host(client)?,
        server: on_host(server)?,
        note: note.into_inner().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::LinkConfig;

    fn link(rtt_ms: u64, rate: Option<u64>, queue: usize) -> LabConfig {
        LabConfig::symmetric(LinkConfig {
            delay: Duration::from_millis(rtt_ms / 2),
            rate_bps: rate,
            queue_packets: queue,
            ..Default::default()
        })
    }

    #[test]
    fn the_tun_queue_holds_twice_the_bdp_in_packets() {
        let mut c = LabConfig::symmetric(crate::lab::LinkConfig {
            delay: Duration::from_millis(150),
            rate_bps: Some(1_000_000_000),
            ..Default::default()
        });
        // 1 Gbit/s × 300 ms = 37.5 MB = 25 000 packets of 1500 bytes.
        assert_eq!(tun_queue_packets(&c), 50_000);
        c.mtu = 9000;
        assert_eq!(tun_queue_packets(&c), 8_333);
        // Short links keep the kernel's 1000.
        let short = LabConfig::symmetric(crate::lab::LinkConfig {
            delay: Duration::from_millis(1),
            rate_bps: Some(10_000_000),
            ..Default::default()
        });
        assert_eq!(tun_queue_packets(&short), 1000);
    }

    #[test]
    fn bdp_is_rate_times_rtt() {
        // 1 Gbit/s × 100 ms = 12.5 MB on the wire.
        let (bytes, rate, rtt) = bdp(&link(100, Some(1_000_000_000), 100));
        assert_eq!(bytes, 12_500_000);
        assert_eq!(rate, 1_000_000_000);
        assert_eq!(rtt, Duration::from_millis(100));
        // Without a rate, the forwarder's speed is assumed.
        assert_eq!(bdp(&link(10, None, 100)).0, 1_250_000);
    }

    #[test]
    fn sized_buffers_hold_four_times_the_path() {
        // 200 Mbit/s × 100 ms = 2.5 MB, plus 100 packets of 1500 bytes.
        let c = link(100, Some(200_000_000), 100);
        assert_eq!(sized_buffer(&c), 4 * (2_500_000 + 150_000));
        // A LAN never goes below 4 MiB; a huge path stops at 1 GiB.
        assert_eq!(sized_buffer(&link(0, Some(1_000_000), 10)), 4 << 20);
        assert_eq!(
            sized_buffer(&link(10_000, Some(100_000_000_000), 10)),
            1 << 30
        );
    }

    #[test]
    fn socket_buffers_are_forced_or_capped_by_the_machine() {
        use std::os::fd::AsRawFd;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let want = 8 << 20;
        let b = size_socket_buffers(socket.as_raw_fd(), want).unwrap();
        let rmem_max = read_one(RMEM_MAX).unwrap();
        if b.forced {
            // The kernel doubles the request (half is bookkeeping).
            assert_eq!(b.receive, 2 * want, "{b:?}");
        } else {
            // Without CAP_NET_ADMIN: what SO_RCVBUF may give, no more.
            assert!(b.receive <= 2 * rmem_max.min(want), "{b:?}");
        }
        // SAFETY: geteuid is always safe.
        if unsafe { libc::geteuid() } == 0
            && std::env::var("PROTO_LAB_REQUIRED").as_deref() == Ok("1")
        {
            assert!(b.forced, "root (CI) may force: {b:?}");
        }
    }

    #[test]
    fn parses_the_option() {
        assert_eq!(parse_host_buffers("sized"), Ok(HostBuffers::Sized));
        assert_eq!(parse_host_buffers("kernel"), Ok(HostBuffers::Kernel));
        assert_eq!(parse_host_buffers("64M"), Ok(HostBuffers::Fixed(64 << 20)));
        assert!(parse_host_buffers("1").is_err());
        assert!(parse_host_buffers("lots").is_err());
    }
}
