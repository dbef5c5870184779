//! The same bulk transfer over QUIC (quinn), with the sender's congestion
//! state read from `Connection::stats()` every millisecond.
//!
//! QUIC runs its congestion control in the application, not the kernel:
//! quinn implements NewReno (RFC 9002 §7, Reno's rules on bytes), CUBIC and
//! BBR. What quinn exposes per path is the congestion window (bytes), the
//! smoothed RTT, congestion events and lost packets and bytes; it does not
//! expose bytes in flight or ssthresh, so those stay empty in the samples
//! (and the report says so). A "congestion event" is QUIC's loss response:
//! the window is cut once, and no further cut happens for losses of packets
//! sent before it (the recovery period, RFC 9002 §7.3.2).

use super::transfer::{host_drops, sample_loop, Sample, TransferConfig, TransferRun};
use crate::lab::{buffers, Lab, SERVER_IP};
use crate::transport::certs::CertDir;
use crate::transport::tls;
use anyhow::Context;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// quinn's congestion controller for `name` (case-insensitive).
fn controller(
    name: Option<&str>,
) -> anyhow::Result<(
    String,
    Arc<dyn quinn::congestion::ControllerFactory + Send + Sync>,
)> {
    use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
    match name.map(str::to_ascii_lowercase).as_deref() {
        None | Some("cubic") => Ok(("cubic".into(), Arc::new(CubicConfig::default()))),
        Some("newreno") | Some("reno") => {
            Ok(("newreno".into(), Arc::new(NewRenoConfig::default())))
        }
        Some("bbr") => Ok(("bbr".into(), Arc::new(BbrConfig::default()))),
        Some(other) => anyhow::bail!(
            "quinn has no congestion controller {other:?}: choose newreno (or reno), cubic or bbr"
        ),
    }
}

/// Flow-control windows and socket buffers sized like the hosts' TCP
/// buffers, so QUIC is not the one held back (issue 17). `None` keeps
/// quinn's defaults (with `--host-buffers kernel`).
fn window_bytes(lab: &Lab) -> Option<u64> {
    match lab.config().host_buffers {
        buffers::HostBuffers::Kernel => None,
        buffers::HostBuffers::Fixed(b) => Some(b),
        buffers::HostBuffers::Sized => Some(buffers::sized_buffer(lab.config())),
    }
}

fn transport_config(
    cc: Arc<dyn quinn::congestion::ControllerFactory + Send + Sync>,
    window: Option<u64>,
    link_mtu: u32,
) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.congestion_controller_factory(cc);
    // Full-size packets from the start and no path-MTU probing: the
    // window is then counted in packets of one size, like TCP's segments.
    // (The largest UDP payload is the link MTU minus IPv4's 20 and UDP's 8.)
    let payload = u16::try_from(link_mtu.saturating_sub(28)).unwrap_or(u16::MAX);
    t.initial_mtu(payload.max(1200));
    t.mtu_discovery_config(None);
    if let Some(w) = window {
        let w = quinn::VarInt::from_u64(w).unwrap_or(quinn::VarInt::MAX);
        t.stream_receive_window(w);
        t.receive_window(w);
        t.send_window(w.into_inner());
    }
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        30_000,
    ))));
    t
}

/// Run one QUIC transfer across `lab`, client → server on one stream.
pub fn run_quic(
    lab: &Lab,
    config: &TransferConfig,
    certs: &CertDir,
) -> anyhow::Result<TransferRun> {
    let (cc_name, cc) = controller(config.cc.as_deref())?;
    let window = window_bytes(lab);
    let mut notes = vec![
        "quinn does not expose bytes in flight or ssthresh: those columns are empty; \
         \"recovery\" marks the sample where a congestion event happened"
            .to_string(),
    ];
    let server_ip = lab.server_ip();
    let identity = certs.load_or_create(&[server_ip.to_string()])?;
    let trust = match &identity.ca {
        Some(ca) => tls::Trust::Ca {
            cert: ca.clone(),
            path: certs.ca_cert(),
        },
        None => anyhow::bail!("the certificate directory has no CA"),
    };
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls::server_config(
            &identity, None, true,
        )?)
        .map_err(|e| anyhow::anyhow!("building the QUIC TLS config: {e}"))?,
    ));
    server_config.transport_config(Arc::new(transport_config(
        cc.clone(),
        window,
        lab.config().mtu,
    )));
    let mut client_config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls::client_config(&trust, None, true)?)
            .map_err(|e| anyhow::anyhow!("building the QUIC TLS config: {e}"))?,
    ));
    client_config.transport_config(Arc::new(transport_config(cc, window, lab.config().mtu)));

    let server_socket = lab
        .in_server(|| UdpSocket::bind(SocketAddr::from((SERVER_IP, 0))))
        .context("binding QUIC's UDP socket on the server host")?;
    let client_socket = lab
        .in_client(|| UdpSocket::bind("0.0.0.0:0"))
        .context("binding QUIC's UDP socket on the client host")?;
    if let Some(w) = window {
        for (host, s) in [("server", &server_socket), ("client", &client_socket)] {
            match buffers::size_socket_buffers(s.as_raw_fd(), w) {
                Ok(b) if !b.forced => {
                    let note = format!(
                        "the {host}'s UDP socket got {:.1} MB of receive and {:.1} MB of send buffer, \
                         not the {:.1} MB asked: SO_RCVBUFFORCE needs CAP_NET_ADMIN in the machine's \
                         own network namespace (a rootless lab lacks it), so SO_RCVBUF was used and \
                         net.core.rmem_max/wmem_max capped it; raise those (sysctl, as root) or run \
                         as root for larger buffers",
                        b.receive as f64 / 2e6,
                        b.send as f64 / 2e6,
                        w as f64 / 1e6
                    );
                    notes.push(note);
                }
                Ok(_) => {}
                Err(e) => notes.push(format!(
                    "could not give the {host}'s UDP socket {w} bytes of buffer ({e}); the kernel's default applies"
                )),
            }
        }
    }
    let to = server_socket.local_addr()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting a runtime for QUIC")?;
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let last_byte: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));

    let (server, client) = runtime.block_on(async {
        let runtime = Arc::new(quinn::TokioRuntime);
        let server = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            server_socket,
            runtime.clone(),
        )?;
        let client = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            client_socket,
            runtime,
        )?;
        anyhow::Ok((server, client))
    })?;

    // The receiver: accept one connection and one stream, read to the end.
    let receiver = {
        let (received, done, last_byte) = (received.clone(), done.clone(), last_byte.clone());
        let slow = config.slow_reader;
        runtime.spawn(async move {
            let result = async {
                let incoming = server
                    .accept()
                    .await
                    .context("no QUIC connection arrived")?;
                let conn = incoming.await?;
                let mut stream = conn.accept_uni().await?;
                let mut buf = vec![0u8; 256 * 1024];
                let started = Instant::now();
                loop {
                    let want = match slow {
                        None => buf.len(),
                        Some(rate) => {
                            let allowed = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                            let have = received.load(Ordering::Relaxed);
                            if allowed <= have {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                continue;
                            }
                            ((allowed - have) as usize).min(buf.len())
                        }
                    };
                    match stream.read(&mut buf[..want]).await? {
                        None => break,
                        Some(n) => {
                            received.fetch_add(n as u64, Ordering::Release);
                            if let Ok(mut t) = last_byte.lock() {
                                *t = Some(Instant::now());
                            }
                        }
                    }
                }
                conn.close(0u32.into(), b"done");
                anyhow::Ok(())
            }
            .await;
            done.store(true, Ordering::Release);
            result
        })
    };

    let conn = runtime.block_on(async {
        client
            .connect_with(client_config, to, &server_ip.to_string())?
            .await
            .context("the QUIC handshake across the lab failed")
    })?;
    let started = Instant::now();
    let sender = {
        let conn = conn.clone();
        let amount = config.amount;
        runtime.spawn(async move {
            let mut stream = conn.open_uni().await?;
            let chunk = vec![0u8; 64 * 1024];
            let begun = Instant::now();
            let mut sent = 0u64;
            loop {
                let want = match amount {
                    super::transfer::Amount::Bytes(total) if sent >= total => break,
                    super::transfer::Amount::Bytes(total) => {
                        (total - sent).min(chunk.len() as u64) as usize
                    }
                    super::transfer::Amount::For(d) if begun.elapsed() >= d => break,
                    super::transfer::Amount::For(_) => chunk.len(),
                };
                stream.write_all(&chunk[..want]).await?;
                sent += want as u64;
            }
            stream.finish()?;
            anyhow::Ok(())
        })
    };

    let mut last_events = 0;
    let mut min_rtt = Duration::MAX;
    let mut last_stats = None;
    let samples = sample_loop(lab, config, started, &done, &mut notes, |at| {
        let stats = conn.stats();
        let path = stats.path;
        let mtu = u64::from(path.current_mtu.max(1));
        let event = path.congestion_events > last_events;
        last_events = path.congestion_events;
        min_rtt = min_rtt.min(path.min_rtt);
        last_stats = Some(stats);
        Ok(Sample {
            t_ms: at.as_secs_f64() * 1e3,
            cwnd: u32::try_from(path.cwnd / mtu).unwrap_or(u32::MAX),
            srtt_ms: path.rtt.as_secs_f64() * 1e3,
            ca_state: if event { "recovery" } else { "open" },
            bytes_acked: received.load(Ordering::Acquire),
            bytes_retrans: path.lost_bytes,
            total_retrans: u32::try_from(path.lost_packets).unwrap_or(u32::MAX),
            mss: path.current_mtu.into(),
            ..Default::default()
        })
    });
    let seconds = started.elapsed().as_secs_f64();
    conn.close(0u32.into(), b"stop");
    runtime.block_on(async {
        if let Ok(Err(e)) = sender.await {
            if !done.load(Ordering::Acquire) {
                notes.push(format!("sending stopped early: {e:#}"));
            }
        }
        if let Ok(Err(e)) = receiver.await {
            if !done.load(Ordering::Acquire) {
                notes.push(format!("receiving failed: {e:#}"));
            }
        }
        client.wait_idle().await;
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    let host_drops = host_drops(lab, &mut notes);
    let samples = with_delivery_rate(samples);
    let last = last_byte.lock().ok().and_then(|t| *t);
    Ok(TransferRun {
        protocol: super::transfer::Protocol::Quic,
        cc: cc_name,
        bytes: received.load(Ordering::Acquire),
        seconds: last
            .map(|t| t.saturating_duration_since(started).as_secs_f64())
            .unwrap_or(seconds),
        options: Default::default(),
        busy_us: 0,
        rwnd_limited_us: 0,
        sndbuf_limited_us: 0,
        min_rtt_ms: if min_rtt == Duration::MAX {
            0.0
        } else {
            min_rtt.as_secs_f64() * 1e3
        },
        samples,
        link: lab.counters(),
        host_drops,
        tls: None,
        notes,
    })
}

/// quinn reports no delivery rate: derive it from the bytes the receiver
/// got over the preceding 50 ms of samples.
fn with_delivery_rate(mut samples: Vec<Sample>) -> Vec<Sample> {
    let mut start = 0;
    for i in 0..samples.len() {
        while samples[i].t_ms - samples[start].t_ms > 50.0 {
            start += 1;
        }
        let dt = (samples[i].t_ms - samples[start].t_ms) / 1e3;
        if dt > 0.0 {
            let bytes = samples[i].bytes_acked - samples[start].bytes_acked;
            samples[i].delivery_rate_bps = (bytes as f64 * 8.0 / dt) as u64;
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controllers_by_name() {
        assert_eq!(controller(Some("NewReno")).unwrap().0, "newreno");
        assert_eq!(controller(Some("reno")).unwrap().0, "newreno");
        assert_eq!(controller(None).unwrap().0, "cubic");
        assert_eq!(controller(Some("bbr")).unwrap().0, "bbr");
        assert!(controller(Some("vegas")).is_err());
    }

    #[test]
    fn delivery_rate_from_received_bytes() {
        let samples = (0..100)
            .map(|t| Sample {
                t_ms: t as f64,
                bytes_acked: t * 1000, // 1000 bytes per ms = 8 Mbit/s
                ..Default::default()
            })
            .collect();
        let s = with_delivery_rate(samples);
        assert_eq!(s[0].delivery_rate_bps, 0);
        assert_eq!(s[99].delivery_rate_bps, 8_000_000);
    }
}
