//! Accuracy and cost of the lab's link emulator.
//!
//! `cargo bench --bench lab` prints (as root, or as an ordinary user through
//! a user namespace, like `proto` itself):
//! * the RTT the link adds at zero delay (UDP ping-pong through the lab
//!   minus the same ping-pong over loopback inside one namespace);
//! * the error of a TCP connect across `--rtt 100ms`;
//! * bulk TCP throughput client→server at several MTUs.
//!
//! A plain measurement program (harness = false): the numbers are the point,
//! not a statistical regression test.

use proto::lab::{Lab, LabConfig, LinkConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

fn main() {
    // Without root: into a user namespace while this process has one thread.
    proto::lab::userns::prepare();
    if let Err(e) = Lab::check_available() {
        eprintln!("skipping the lab benchmark: {e}");
        return;
    }
    // `cargo bench` passes --bench; allow a filter word too.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if wanted("latency") {
        added_latency();
    }
    if wanted("delay") {
        delay_error();
    }
    if wanted("throughput") {
        for mtu in [1500, 9000, 65000] {
            throughput(mtu, Duration::ZERO);
        }
    }
    if wanted("delayed") {
        throughput(1500, Duration::from_millis(20));
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// UDP ping-pong: a server thread echoes, the caller measures round trips.
fn ping_pong(server: UdpSocket, client: UdpSocket, to: SocketAddr, n: usize) -> Vec<f64> {
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..n + 100 {
            let Ok((len, from)) = server.recv_from(&mut buf) else {
                break;
            };
            let _ = server.send_to(&buf[..len], from);
        }
    });
    let mut rtts = Vec::with_capacity(n);
    let mut buf = [0u8; 64];
    for i in 0..n + 100 {
        let t = Instant::now();
        client.send_to(b"ping", to).expect("send");
        client.recv_from(&mut buf).expect("recv");
        if i >= 100 {
            rtts.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    echo.join().expect("echo thread");
    rtts
}

fn added_latency() {
    let lab = Lab::start(LabConfig::default()).expect("lab");
    // Baseline: loopback inside the client namespace.
    let (lo_s, lo_c) = lab.in_client(|| {
        (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        )
    });
    let lo_to = lo_s.local_addr().unwrap();
    // Through the link.
    let ip = lab.server_ip();
    let link_s = lab.in_server(|| UdpSocket::bind((ip, 0)).unwrap());
    let link_to = link_s.local_addr().unwrap();
    let link_c = lab.in_client(|| UdpSocket::bind("0.0.0.0:0").unwrap());
    // Alternate short rounds so background load hits both alike.
    let (mut diffs, mut los, mut links) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..15 {
        let mut lo = ping_pong(
            lo_s.try_clone().unwrap(),
            lo_c.try_clone().unwrap(),
            lo_to,
            400,
        );
        let mut link = ping_pong(
            link_s.try_clone().unwrap(),
            link_c.try_clone().unwrap(),
            link_to,
            400,
        );
        let (l, k) = (median(&mut lo), median(&mut link));
        los.push(l);
        links.push(k);
        diffs.push(k - l);
    }
    let best = |v: &[f64]| v.iter().cloned().fold(f64::MAX, f64::min);
    println!(
        "added RTT at 0 delay: {:.1} µs median of per-round differences, {:.1} µs between the best rounds \
         (UDP RTT through the link: median {:.1} µs, best round {:.1} µs; loopback: median {:.1} µs, best round {:.1} µs; \
         differences per round {:.0?})",
        median(&mut diffs.clone()),
        best(&links) - best(&los),
        median(&mut links.clone()),
        best(&links),
        median(&mut los.clone()),
        best(&los),
        diffs
    );
}

fn delay_error() {
    let link = LinkConfig {
        delay: Duration::from_millis(50),
        ..Default::default()
    };
    let lab = Lab::start(LabConfig::symmetric(link)).expect("lab");
    let ip = lab.server_ip();
    let listener = lab.in_server(|| TcpListener::bind((ip, 0)).unwrap());
    let to = listener.local_addr().unwrap();
    let accept = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for _ in 0..21 {
            conns.push(listener.accept().unwrap());
        }
    });
    // Baseline: a TCP connect over loopback inside the client namespace.
    let lo = lab.in_client(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let lo_to = lo.local_addr().unwrap();
    let mut lo_us: Vec<f64> = (0..21)
        .map(|_| {
            lab.in_client(|| {
                let t = Instant::now();
                let s = TcpStream::connect(lo_to).unwrap();
                let e = t.elapsed();
                drop(s);
                let _ = lo.accept();
                e.as_secs_f64() * 1e6
            })
        })
        .collect();
    let mut ms = Vec::new();
    for i in 0..21 {
        let sock = lab.in_client(|| {
            let t = Instant::now();
            let s = TcpStream::connect(to).unwrap();
            (t.elapsed(), s)
        });
        if i > 0 {
            ms.push(sock.0.as_secs_f64() * 1e3);
        }
    }
    accept.join().unwrap();
    let max = ms.iter().cloned().fold(f64::MIN, f64::max);
    let min = ms.iter().cloned().fold(f64::MAX, f64::min);
    let med = median(&mut ms);
    println!(
        "TCP connect at --rtt 100ms: median {med:.3} ms (error {:+.3} ms), min {min:.3}, max {max:.3} over {} connects; a loopback connect takes {:.0} µs here",
        med - 100.0,
        ms.len(),
        median(&mut lo_us)
    );
}

fn throughput(mtu: u32, rtt: Duration) {
    let link = LinkConfig {
        delay: rtt / 2,
        ..Default::default()
    };
    let lab = Lab::start(LabConfig {
        mtu,
        ..LabConfig::symmetric(link)
    })
    .expect("lab");
    let ip = lab.server_ip();
    let listener = lab.in_server(|| TcpListener::bind((ip, 0)).unwrap());
    let to = listener.local_addr().unwrap();
    let secs = if rtt.is_zero() { 3.0 } else { 5.0 };
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let mut start = None;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    start.get_or_insert_with(Instant::now);
                    total += n as u64;
                }
            }
        }
        (total, start.map(|s| s.elapsed()).unwrap_or_default())
    });
    let mut stream = lab.in_client(|| TcpStream::connect(to).unwrap());
    let buf = vec![0x55u8; 1 << 20];
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        stream.write_all(&buf).unwrap();
    }
    drop(stream);
    let (bytes, elapsed) = receiver.join().unwrap();
    let c = lab.shutdown();
    let gbit = bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9;
    println!(
        "bulk TCP at MTU {mtu}, RTT {rtt:?}: {gbit:.2} Gbit/s ({:.0} MB/s) goodput, {} packets client→server",
        gbit * 1e3 / 8.0,
        c.client_to_server.packets
    );
}
