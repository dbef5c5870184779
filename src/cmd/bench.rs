//! `proto bench`: echo servers in-process, the same load against each
//! transport, one comparison table.
//!
//! Servers bind `127.0.0.1:0` inside this process ([`crate::server::run`]),
//! the load generator ([`crate::cmd::load::run_load`]) runs against each in
//! turn, and the table puts p50/p99/p99.9 and throughput side by side, with
//! each transport's ratio to TCP's.
//!
//! # Placement: compare like with like
//!
//! On loopback a round trip is a few µs of work and a few *wake-ups*: the
//! server's thread wakes when the request arrives, the client's when the
//! reply does. Waking a thread on another CPU costs far more than the work
//! (tens of µs on a virtual machine), so *where* client and server run
//! decides the figure. proto's plain TCP and UDP use a blocking thread per
//! connection while TLS and QUIC use tokio tasks; left to themselves the
//! two kinds end up placed differently (threads on different CPUs, tasks on
//! one worker) and the table would say that encryption is faster than no
//! encryption. So the servers run in their own runtime and threads, the
//! load in another, and both are placed the same way for every transport
//! ([`Placement`], `--placement`), and the output says how.

use crate::cmd::link_args::LinkArgs;
use crate::cmd::load::{healthy, run_load, validate, Security};
use crate::lab::servers::LabServers;
use crate::measure::histogram::Unit;
use crate::measure::load::{LoadConfig, LoadProgress, LoadReport, Stop};
use crate::output::latency::LoadJson;
use crate::output::progress::ProgressDisplay;
use crate::server::{self, Listeners, ServerConfig, ServiceAddresses};
use crate::transport::{tls, Target, Transport};
use crate::units::{parse_duration, parse_request_rate, parse_size};
use anyhow::bail;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  proto bench                          every transport, 3 s each, on one CPU\n  proto bench --placement two-cpus     client on one CPU, servers on another\n  proto bench --protocols tcp -c 8     8 connections\n  proto bench --size 32K --count 5000  large messages\n  proto bench --request-rate 5000/s    open loop, corrected latency\n  proto bench --rtt 20ms --loss 1%     across an emulated link (proto lab)\n\n--rate is the emulated link's bandwidth (e.g. 10mbit); requests per second\nare --request-rate."
)]
pub struct BenchArgs {
    /// Transports to compare, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "tcp,udp,tls,quic"
    )]
    pub protocols: Vec<Transport>,
    /// Requests per transport (instead of --duration).
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    pub count: Option<u64>,
    /// How long to load each transport.
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Connections (UDP: sockets), each with one request in flight.
    #[arg(short = 'c', long, default_value_t = 1, value_name = "C")]
    pub connections: usize,
    /// Payload bytes per message.
    #[arg(long, default_value = "64", value_parser = parse_size, value_name = "BYTES")]
    pub size: usize,
    /// Use the binary frame format instead of text lines.
    #[arg(long)]
    pub framed: bool,
    /// Unrecorded warm-up before each transport's measurement.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, value_name = "DURATION")]
    pub warmup: Duration,
    /// Open loop at this many requests per second (latency corrected for
    /// coordinated omission). Default: closed loop.
    #[arg(long, value_parser = parse_request_rate, value_name = "R/s")]
    pub request_rate: Option<f64>,
    /// UDP: a reply not back within this long counts as lost.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub lost_after: Duration,
    /// An emulated link between the load and the servers (`proto lab`'s
    /// options; without root, in a user namespace). Without any, the bench runs
    /// over loopback; with any, it never falls back to loopback.
    #[command(flatten)]
    pub link: LinkArgs,
    /// Where the load (client) and the servers run, the same for every
    /// transport: `one-cpu` pins both to one CPU (repeatable, like
    /// `taskset -c 0`); `two-cpus` pins the client to one CPU and the servers
    /// to another (every round trip crosses CPUs); `unpinned` leaves it to the
    /// scheduler. Default: one-cpu (loopback only; not with link options).
    #[arg(long, value_enum, value_name = "PLACEMENT")]
    pub placement: Option<Placement>,
    /// Print all results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Where a loopback bench runs its client and its servers (see the module
/// documentation for why it matters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Placement {
    /// Client and servers pinned to the same CPU.
    OneCpu,
    /// Client pinned to one CPU, servers to another.
    TwoCpus,
    /// No pinning: the scheduler decides.
    Unpinned,
}

/// A [`Placement`] made concrete: the CPUs of each side (`None`: any).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cpus {
    placement: Placement,
    client: Option<usize>,
    server: Option<usize>,
}

impl Cpus {
    /// Picks CPUs for `placement` among those this process may use.
    fn choose(placement: Placement, allowed: &[usize]) -> anyhow::Result<Cpus> {
        let (client, server) = match (placement, allowed) {
            (Placement::Unpinned, _) => (None, None),
            (_, []) => bail!(
                "cannot tell which CPUs this process may use (sched_getaffinity); try --placement unpinned"
            ),
            (Placement::OneCpu, [first, ..]) => (Some(*first), Some(*first)),
            (Placement::TwoCpus, [first, second, ..]) => (Some(*first), Some(*second)),
            (Placement::TwoCpus, [only]) => bail!(
                "--placement two-cpus needs two CPUs, but this process may only use CPU {only}"
            ),
        };
        Ok(Cpus {
            placement,
            client,
            server,
        })
    }

    /// One line for the output: how client and servers were placed.
    fn describe(&self) -> String {
        match (self.client, self.server) {
            (Some(c), Some(s)) if c == s => format!(
                "Placement: client and servers pinned to CPU {c} for every transport \
                 (--placement one-cpu; two-cpus or unpinned for the others)."
            ),
            (Some(c), Some(s)) => format!(
                "Placement: client pinned to CPU {c}, servers to CPU {s}, for every transport: \
                 each round trip wakes a thread on the other CPU twice (--placement two-cpus)."
            ),
            _ => "Placement: client and servers in separate threads, not pinned: the scheduler \
                  decides, and cross-CPU wake-ups come and go (--placement unpinned)."
                .into(),
        }
    }

    fn name(&self) -> &'static str {
        match self.placement {
            Placement::OneCpu => "one-cpu",
            Placement::TwoCpus => "two-cpus",
            Placement::Unpinned => "unpinned",
        }
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Pins the calling thread to `cpu`. Threads it starts later inherit that.
fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: as above; `cpu` < CPU_SETSIZE since it came from allowed_cpus.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A runtime for one side of the bench, its threads (workers and the
/// blocking pool: the plain TCP client's threads) on `cpu`. Threads that
/// code in it starts with `std::thread` (the blocking TCP and UDP servers)
/// inherit the pinning.
fn side_runtime(name: &str, cpu: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    if let Some(cpu) = cpu {
        // Fail here, clearly, rather than silently in every thread.
        std::thread::scope(|s| s.spawn(|| pin_current_thread(cpu)).join())
            .map_err(|_| anyhow::anyhow!("the CPU pinning probe panicked"))?
            .map_err(|e| {
                anyhow::anyhow!("cannot pin a thread to CPU {cpu}: {e}; try --placement unpinned")
            })?;
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .enable_all()
        .thread_name(format!("proto-bench-{name}"))
        .worker_threads(if cpu.is_some() { 1 } else { 2 });
    if let Some(cpu) = cpu {
        builder.on_thread_start(move || {
            let _ = pin_current_thread(cpu);
        });
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("starting the bench's {name} runtime: {e}"))
}

/// One transport's result.
struct Row {
    transport: Transport,
    report: LoadReport,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let mut protocols = args.protocols.clone();
    protocols.dedup();
    if protocols.is_empty() {
        bail!("--protocols needs at least one of tcp, udp, tls, quic");
    }
    let link = args.link.to_config()?;
    let over_lab = args.link.asks_for_link();
    if over_lab && args.placement.is_some() {
        bail!(
            "--placement is for the loopback bench; across the emulated link the link's own \
             forwarding threads take part in every round trip, and proto leaves them unpinned"
        );
    }
    let cpus = Cpus::choose(args.placement.unwrap_or(Placement::OneCpu), &allowed_cpus())?;
    let (rows, addresses, placement) = if over_lab {
        let servers = LabServers::start(link.clone()).await?;
        let addresses = servers.addresses.clone();
        let (args2, protocols2, addresses2) = (args.clone(), protocols.clone(), addresses.clone());
        let result = servers
            .on_client(move || async move { bench_all(&args2, &protocols2, &addresses2).await })
            .await;
        let (_, counters) = servers.stop().await?;
        // On stderr even with --json: stdout stays one clean JSON document.
        eprintln!("{}", crate::output::link::counters_table(&counters));
        let fidelity = crate::lab::fidelity::assess_lab(&link, &counters);
        eprintln!("{}", crate::output::link::fidelity_verdict(&fidelity));
        let placement = "Placement: across the emulated link, not pinned.".to_string();
        (result??, addresses, placement)
    } else {
        // In-process servers on loopback, each on a free port, in a runtime
        // of their own; the load in another; both placed alike.
        let config = ServerConfig::quiet_default()?;
        let listeners = Listeners::bind_all(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0, 0)?;
        let addresses = listeners.addresses();
        let shutdown = CancellationToken::new();
        let server_runtime = side_runtime("server", cpus.server)?;
        let client_runtime = side_runtime("client", cpus.client)?;
        let server = server_runtime.spawn(server::run(listeners, config, shutdown.clone()));
        let (args2, protocols2, addresses2) = (args.clone(), protocols.clone(), addresses.clone());
        let result = client_runtime
            .spawn(async move { bench_all(&args2, &protocols2, &addresses2).await })
            .await;
        shutdown.cancel();
        let _ = server.await;
        // Dropping a runtime waits for its threads, which async code must not do.
        client_runtime.shutdown_background();
        server_runtime.shutdown_background();
        let rows = result.map_err(|e| anyhow::anyhow!("the bench's client task failed: {e}"))??;
        (rows, addresses, cpus.describe())
    };

    if args.json {
        let targets: Vec<String> = rows
            .iter()
            .map(|r| address_of(&addresses, r.transport))
            .collect();
        let json: Vec<LoadJson<'_>> = rows
            .iter()
            .zip(&targets)
            .map(|(r, t)| {
                let lanes = crate::output::latency::Lanes::new(r.transport, args.connections, 1);
                let mut json = LoadJson::new(&r.report, r.transport.name(), t, lanes);
                json.placement = Some(if over_lab { "lab" } else { cpus.name() });
                json
            })
            .collect();
        outln!("{}", crate::output::json::pretty(&json)?);
    } else {
        outln!("{placement}");
        let table: Vec<(Transport, &LoadReport)> =
            rows.iter().map(|r| (r.transport, &r.report)).collect();
        outln!("{}", crate::output::bench::comparison_table(&table));
        for r in &rows {
            for e in &r.report.errors {
                outln!("{}: {e}", r.transport.name());
            }
        }
    }
    Ok(if rows.iter().all(|r| healthy(&r.report)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn address_of(addresses: &ServiceAddresses, t: Transport) -> String {
    addresses.get(t).map(|a| a.to_string()).unwrap_or_default()
}

async fn bench_all(
    args: &BenchArgs,
    protocols: &[Transport],
    addresses: &ServiceAddresses,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // proto's local CA signed the in-process servers' certificates.
    let security = Security {
        trust: tls::Trust::from_options(None, false)?,
        server_name: None,
        tls_version: None,
    };
    for &transport in protocols {
        let target = Target::parse(&address_of(addresses, transport), 0)?;
        let config = LoadConfig {
            connections: args.connections,
            size: args.size,
            framed: args.framed,
            stop: match args.count {
                Some(n) => Stop::Count(n),
                None => Stop::Duration(args.duration),
            },
            warmup: args.warmup,
            rate: args.request_rate,
            timeout: if transport == Transport::Udp {
                args.lost_after
            } else {
                Duration::from_secs(5)
            },
            unit: Unit::Nanos,
        };
        validate(&config, transport, "--request-rate")?;
        let progress = Arc::new(LoadProgress::default());
        let bar = ProgressDisplay::start(&progress, &config, transport.name());
        let report = run_load(
            transport,
            &target,
            &config,
            &security,
            1,
            Duration::from_secs(5),
            progress,
        )
        .await;
        bar.finish().await;
        rows.push(Row {
            transport,
            report: report?,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_pick_cpus_among_the_allowed_ones() {
        let one = Cpus::choose(Placement::OneCpu, &[2, 5]).unwrap();
        assert_eq!((one.client, one.server), (Some(2), Some(2)));
        let two = Cpus::choose(Placement::TwoCpus, &[2, 5]).unwrap();
        assert_eq!((two.client, two.server), (Some(2), Some(5)));
        let free = Cpus::choose(Placement::Unpinned, &[]).unwrap();
        assert_eq!((free.client, free.server), (None, None));
        let err = Cpus::choose(Placement::TwoCpus, &[3]).unwrap_err();
        assert!(err.to_string().contains("only use CPU 3"), "{err}");
        assert!(Cpus::choose(Placement::OneCpu, &[]).is_err());
    }

    #[test]
    fn the_description_says_how_each_side_was_placed() {
        let one = Cpus::choose(Placement::OneCpu, &[0, 1]).unwrap();
        assert!(one.describe().contains("pinned to CPU 0"));
        let two = Cpus::choose(Placement::TwoCpus, &[0, 1]).unwrap();
        assert!(two.describe().contains("servers to CPU 1"));
        assert_eq!(two.name(), "two-cpus");
    }

    #[test]
    fn pinning_the_current_thread_takes_effect() {
        let allowed = allowed_cpus();
        let Some(&last) = allowed.last() else { return };
        std::thread::spawn(move || {
            pin_current_thread(last).unwrap();
            assert_eq!(allowed_cpus(), vec![last]);
        })
        .join()
        .unwrap();
    }
}
