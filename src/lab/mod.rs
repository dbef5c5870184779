//! `proto lab`: a two-host network with an emulated link, inside one process.
//!
//! On loopback a round trip takes microseconds, so "TLS 1.2 costs 3 RTT"
//! cannot be seen. The lab builds a small network where it can:
//!
//! ```text
//!   namespace "client"                                namespace "server"
//!  ┌──────────────────────┐                         ┌──────────────────────┐
//!  │ kernel TCP/UDP stack │                         │ kernel TCP/UDP stack │
//!  │  10.77.0.1           │   proto's forwarder     │  10.77.0.2           │
//!  │  lab-client (TUN) ───┼──► delay/loss/rate ───► ┼── lab-server (TUN)   │
//!  │                   ◄──┼─── delay/loss/rate ◄────┼──                    │
//!  └──────────────────────┘  (one thread per dir.)  └──────────────────────┘
//! ```
//!
//! Both hosts run the kernel's real, unmodified TCP and UDP; only the cable
//! between them is proto's. See the files for each piece:
//!
//! * `model.rs`: what the link does to each packet (pure, seeded, testable);
//! * `netns.rs`: network namespaces, the "two hosts";
//! * `tun.rs`: TUN devices, the interfaces whose wire is a file descriptor;
//! * `forwarder.rs`: the precise-timing threads that carry the packets;
//! * `pcap.rs`: the capture file writer;
//! * `child.rs`: running a command "on" a host, and cleaning up after it;
//! * `servers.rs`: proto's servers on one side, client work on the other.

pub mod buffers;
pub mod child;
pub mod fidelity;
pub mod forwarder;
pub mod model;
pub mod netns;
pub mod pcap;
pub mod presets;
pub mod servers;
pub mod tap;
pub mod tun;
pub mod userns;

pub use model::{DirectionCounters, LinkConfig, LinkConfigError, LossModel};

use forwarder::{CapturePoint, Direction};
use model::LinkModel;
use netns::NetNs;
use serde::Serialize;
use std::fs::File;
use std::io::{self, BufWriter};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The client's address on the lab link.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The server's address on the lab link.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The client host's interface on the lab link.
pub const CLIENT_IF: &str = "lab-client";
const SERVER_IF: &str = "lab-server";

/// Everything about the emulated network.
#[derive(Clone, Debug, PartialEq)]
pub struct LabConfig {
    /// The "up" direction.
    pub client_to_server: LinkConfig,
    /// The "down" direction.
    pub server_to_client: LinkConfig,
    /// Same seed, same drops, delays and duplicates for the same traffic.
    pub seed: u64,
    /// MTU of both TUN devices (largest IP packet on the link).
    pub mtu: u32,
    /// Write every packet crossing the link to this pcap file.
    pub pcap: Option<PathBuf>,
    /// The hosts' socket-buffer limits (see `buffers.rs`).
    pub host_buffers: buffers::HostBuffers,
    /// Record every packet and the link's decision about it (`proto trace`),
    /// and apply faults by name.
    pub tap: Option<tap::LinkTap>,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            client_to_server: LinkConfig::default(),
            server_to_client: LinkConfig::default(),
            seed: 1,
            mtu: 1500,
            pcap: None,
            host_buffers: buffers::HostBuffers::default(),
            tap: None,
        }
    }
}

impl LabConfig {
    /// The same link both ways.
    pub fn symmetric(link: LinkConfig) -> LabConfig {
        LabConfig {
            client_to_server: link.clone(),
            server_to_client: link,
            ..Default::default()
        }
    }
}

/// Counters for both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkCounters {
    pub client_to_server: DirectionCounters,
    pub server_to_client: DirectionCounters,
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The machine or the user lacks something the lab needs.
    #[error("proto lab needs {what}; {how_to_fix}")]
    Unavailable { what: String, how_to_fix: String },
    #[error("invalid link settings ({direction}): {source}")]
    Config {
        direction: &'static str,
        #[source]
        source: model::LinkConfigError,
    },
    #[error("MTU {0} is outside 68..=65535")]
    Mtu(u32),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
    let context = context.into();
    move |source| LabError::Io { context, source }
}

/// A running two-namespace network. Dropping it tears everything down.
#[derive(Debug)]
pub struct Lab {
    client_ns: NetNs,
    server_ns: NetNs,
    // Kept so the devices live as long as the lab; the threads hold clones.
    _client_tun: Arc<OwnedFd>,
    _server_tun: Arc<OwnedFd>,
    stop: Arc<OwnedFd>,
    threads: Vec<JoinHandle<DirectionCounters>>,
    up: Arc<Mutex<DirectionCounters>>,
    down: Arc<Mutex<DirectionCounters>>,
    up_busy_until: Arc<Mutex<Option<Instant>>>,
    down_busy_until: Arc<Mutex<Option<Instant>>>,
    final_counters: Option<LinkCounters>,
    config: LabConfig,
    buffers: buffers::HostBufferReport,
}

const SUDO_HINT: &str = "run proto as root, e.g. `sudo proto lab …` (in a container: --cap-add NET_ADMIN --cap-add SYS_ADMIN --device /dev/net/tun)";

/// `proto` (the binary) prepares a user namespace when it is not root; a
/// program using the library without doing so gets this advice.
const PREPARE_HINT: &str = "call proto::lab::userns::prepare() first thing in main (before any thread starts) to build the lab in a user namespace, or run as root";

impl Lab {
    /// Check, without changing anything, that this process can build a lab:
    /// it needs CAP_SYS_ADMIN (new namespaces) and CAP_NET_ADMIN (TUN
    /// devices, addresses), as root or inside the user namespace that
    /// [`userns::prepare`] made, and a usable /dev/net/tun.
    pub fn check_available() -> Result<(), LabError> {
        if let Some(userns::Privilege::Unavailable { what, how_to_fix }) = userns::privilege() {
            return Err(LabError::Unavailable {
                what: what.clone(),
                how_to_fix: how_to_fix.clone(),
            });
        }
        if !userns::has_lab_capabilities() {
            return Err(LabError::Unavailable {
                what: "the CAP_NET_ADMIN and CAP_SYS_ADMIN capabilities (to create network namespaces and TUN devices)"
                    .into(),
                how_to_fix: PREPARE_HINT.into(),
            });
        }
        match std::fs::OpenOptions::new().read(true).write(true).open(tun::TUN_PATH) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LabError::Unavailable {
                what: format!("{} (the TUN/TAP driver), which does not exist here", tun::TUN_PATH),
                how_to_fix: "load the driver with `sudo modprobe tun` (in a container: --device /dev/net/tun)".into(),
            }),
            Err(e) => Err(LabError::Unavailable {
                what: format!("read/write access to {} ({e})", tun::TUN_PATH),
                how_to_fix: SUDO_HINT.into(),
            }),
        }
    }

    /// Build the two namespaces, their TUN devices and addresses, and start
    /// the forwarder threads.
    pub fn start(config: LabConfig) -> Result<Lab, LabError> {
        // Settings first: a typo should be reported even without root.
        for (dir, link) in [
            ("client→server", &config.client_to_server),
            ("server→client", &config.server_to_client),
        ] {
            link.validate().map_err(|source| LabError::Config {
                direction: dir,
                source,
            })?;
        }
        if !(68..=65535).contains(&config.mtu) {
            return Err(LabError::Mtu(config.mtu));
        }
        Self::check_available()?;

        let client_ns =
            NetNs::create().map_err(unavailable_or("creating the client network namespace"))?;
        let server_ns =
            NetNs::create().map_err(unavailable_or("creating the server network namespace"))?;
        let queue = buffers::tun_queue_packets(&config);
        let client_tun = host_setup(
            &client_ns,
            CLIENT_IF,
            (CLIENT_IP, SERVER_IP),
            config.mtu,
            queue,
        )?;
        let server_tun = host_setup(
            &server_ns,
            SERVER_IF,
            (SERVER_IP, CLIENT_IP),
            config.mtu,
            queue,
        )?;
        let host_buffers = buffers::apply(&config, &client_ns, &server_ns)
            .map_err(io_err("setting the hosts' socket-buffer limits"))?;
        let client_tun = Arc::new(client_tun.fd);
        let server_tun = Arc::new(server_tun.fd);

        let pcap = match &config.pcap {
            None => None,
            Some(path) => {
                let file =
                    File::create(path).map_err(io_err(format!("creating {}", path.display())))?;
                let w = pcap::PcapWriter::new(
                    BufWriter::with_capacity(1 << 20, file),
                    config.mtu.max(1500),
                )
                .map_err(io_err("writing the pcap header"))?;
                Some(Arc::new(Mutex::new(w)))
            }
        };

        let stop = Arc::new(forwarder::stop_fd().map_err(io_err("creating an eventfd"))?);
        let up = Arc::new(Mutex::new(DirectionCounters::default()));
        let down = Arc::new(Mutex::new(DirectionCounters::default()));
        let up_busy_until = Arc::new(Mutex::new(None));
        let down_busy_until = Arc::new(Mutex::new(None));
        let mut lab = Lab {
            client_ns,
            server_ns,
            _client_tun: client_tun.clone(),
            _server_tun: server_tun.clone(),
            stop: stop.clone(),
            threads: Vec::new(),
            up: up.clone(),
            down: down.clone(),
            up_busy_until: up_busy_until.clone(),
            down_busy_until: down_busy_until.clone(),
            final_counters: None,
            config: config.clone(),
            buffers: host_buffers,
        };
        let directions = [
            Direction {
                name: "lab-up".into(),
                input: client_tun.clone(),
                output: server_tun.clone(),
                model: LinkModel::new(config.client_to_server.clone(), config.seed, 0),
                mtu: config.mtu as usize,
                capture: pcap.clone().map(|p| (p, CapturePoint::OnArrival)),
                tap: config
                    .tap
                    .clone()
                    .map(|t| (t, crate::wire::dissect::Dir::ClientToServer)),
                shared: up,
                busy_until: up_busy_until,
                stop: stop.clone(),
            },
            Direction {
                name: "lab-down".into(),
                input: server_tun,
                output: client_tun,
                model: LinkModel::new(config.server_to_client.clone(), config.seed, 1),
                mtu: config.mtu as usize,
                capture: pcap.map(|p| (p, CapturePoint::OnDelivery)),
                tap: config
                    .tap
                    .clone()
                    .map(|t| (t, crate::wire::dissect::Dir::ServerToClient)),
                shared: down,
                busy_until: down_busy_until,
                stop,
            },
        ];
        for d in directions {
            // On error `lab` is dropped, which stops the threads already started.
            lab.threads
                .push(forwarder::spawn(d).map_err(io_err("starting a forwarder thread"))?);
        }
        Ok(lab)
    }

    pub fn client_ip(&self) -> IpAddr {
        IpAddr::V4(CLIENT_IP)
    }

    pub fn server_ip(&self) -> IpAddr {
        IpAddr::V4(SERVER_IP)
    }

    pub fn config(&self) -> &LabConfig {
        &self.config
    }

    /// The socket-buffer limits both hosts hold, as read back from them.
    pub fn host_buffers(&self) -> &buffers::HostBufferReport {
        &self.buffers
    }

    /// Run `f` on a thread inside the server's namespace: sockets it creates
    /// live on the server host and can be used from any thread afterwards.
    /// For tokio, create std sockets here, `set_nonblocking(true)`, then
    /// `tokio::net::TcpListener::from_std` (or quinn's `Endpoint::new`)
    /// outside. `f` should be quick: the caller blocks until it returns.
    pub fn in_server<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in(&self.server_ns, f)
    }

    /// Like [`Lab::in_server`], on the client host.
    pub fn in_client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in(&self.client_ns, f)
    }

    /// The client host's namespace (to spawn processes there, see `child.rs`).
    pub fn client_ns(&self) -> &NetNs {
        &self.client_ns
    }

    /// The server host's namespace.
    pub fn server_ns(&self) -> &NetNs {
        &self.server_ns
    }

    /// A snapshot of the counters (exact once the lab is shut down).
    pub fn counters(&self) -> LinkCounters {
        if let Some(c) = self.final_counters {
            return c;
        }
        let get = |m: &Mutex<DirectionCounters>| m.lock().map(|c| *c).unwrap_or_default();
        LinkCounters {
            client_to_server: get(&self.up),
            server_to_client: get(&self.down),
        }
    }

    /// How long a packet entering the bottleneck now would wait in its queue
    /// (zero without a rate), per direction: `(client→server, server→client)`.
    /// Queue bytes = delay × rate ÷ 8.
    pub fn queue_delay(&self) -> (Duration, Duration) {
        let now = Instant::now();
        let wait = |m: &Mutex<Option<Instant>>| {
            m.lock()
                .ok()
                .and_then(|b| *b)
                .map_or(Duration::ZERO, |busy| busy.saturating_duration_since(now))
        };
        (wait(&self.up_busy_until), wait(&self.down_busy_until))
    }

    /// Stop the link and return the final counters. The namespaces and
    /// devices vanish as soon as no socket or process uses them any more.
    /// Waits until no packet is inside the link and none has entered it for
    /// `quiet`, at most `limit`: what is already on its way when COMMAND
    /// ends (its FIN, the server's answering FIN, the last ACKs) then
    /// arrives — and is captured — before the link stops. False when
    /// `limit` passed first (a chatty or retransmitting peer).
    pub fn drain(&self, quiet: Duration, limit: Duration) -> bool {
        let started = std::time::Instant::now();
        let mut last_entered = (u64::MAX, u64::MAX);
        let mut quiet_since = started;
        loop {
            let c = self.counters();
            let entered = (c.client_to_server.packets, c.server_to_client.packets);
            let now = std::time::Instant::now();
            if entered != last_entered {
                last_entered = entered;
                quiet_since = now;
            }
            let empty = inside(&c.client_to_server) == 0 && inside(&c.server_to_client) == 0;
            if empty && now.duration_since(quiet_since) >= quiet {
                return true;
            }
            if now.duration_since(started) >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn shutdown(mut self) -> LinkCounters {
        self.stop_threads();
        self.counters()
    }

    fn stop_threads(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        forwarder::signal_stop(&self.stop);
        let mut finals = Vec::new();
        for t in self.threads.drain(..) {
            finals.push(t.join().unwrap_or_default());
        }
        if let [mut up, mut down] = finals[..] {
            // Packets the kernel dropped at a TUN device before the
            // forwarder read them: the up direction reads the client's.
            // (Best effort, also from `drop`: never panic here.)
            let dropped = |ns: &NetNs, name: &'static str| {
                ns.run(move || fidelity::tun_tx_dropped(name))
                    .ok()
                    .flatten()
                    .unwrap_or(0)
            };
            up.timing.tun_dropped = dropped(&self.client_ns, CLIENT_IF);
            down.timing.tun_dropped = dropped(&self.server_ns, SERVER_IF);
            self.final_counters = Some(LinkCounters {
                client_to_server: up,
                server_to_client: down,
            });
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// Packets inside one direction of the link right now: every packet (and
/// extra copy) that entered and has not been delivered or dropped yet.
fn inside(c: &DirectionCounters) -> u64 {
    (c.packets + c.duplicated).saturating_sub(
        c.delivered_packets + c.dropped_loss + c.dropped_forced + c.dropped_queue + c.write_errors,
    )
}

fn run_in<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> T {
    match ns.run(f) {
        Ok(t) => t,
        // setns on our own namespace fd, or spawning a thread, failed: the
        // process is out of resources; nothing sensible to return.
        Err(e) => panic!("cannot run in the lab namespace: {e}"),
    }
}

/// EPERM while creating namespaces means missing privileges, not a bug.
fn unavailable_or(context: &'static str) -> impl FnOnce(io::Error) -> LabError {
    move |e| {
        if e.kind() == io::ErrorKind::PermissionDenied {
            LabError::Unavailable {
                what: format!("permission for {context} ({e})"),
                how_to_fix: SUDO_HINT.into(),
            }
        } else {
            LabError::Io {
                context: context.into(),
                source: e,
            }
        }
    }
}

/// Inside `ns`: no IPv6 chatter (router solicitations would otherwise cross
/// the link and the counters), `lo` up, and a configured TUN device.
fn host_setup(
    ns: &NetNs,
    name: &str,
    (local, peer): (Ipv4Addr, Ipv4Addr),
    mtu: u32,
    tx_queue_packets: u32,
) -> Result<tun::Tun, LabError> {
    let name = name.to_string();
    ns.run(move || -> Result<tun::Tun, LabError> {
        // Best effort: the files do not exist when IPv6 is disabled already.
        let _ = tun::write_sysctl("net/ipv6/conf/default/disable_ipv6", "1");
        let _ = tun::write_sysctl("net/ipv6/conf/all/disable_ipv6", "1");
        // `ping` for everyone on the lab's hosts: ICMP echo sockets need no
        // raw-socket privilege when the group is in this range (also
        // best effort; the rootless lab's users have no CAP_NET_RAW for
        // the set-capability ping binary).
        let _ = tun::write_sysctl("net/ipv4/ping_group_range", "0 2147483647");
        tun::loopback_up().map_err(io_err("bringing up lo"))?;
        let dev = tun::create(&name).map_err(unavailable_or("creating a TUN device"))?;
        tun::configure_point_to_point(&name, local, peer, mtu, tx_queue_packets)
            .map_err(io_err(format!("configuring {name}")))?;
        Ok(dev)
    })
    .map_err(io_err("entering a lab namespace"))?
}
