//! One echo round trip through proto's own servers, in-process, over
//! loopback: TCP lines, TCP frames and UDP datagrams of 64 bytes.
//!
//!   cargo bench --bench echo
//!
//! Server and client share one tokio runtime (2 worker threads), so this
//! measures proto's code path plus the kernel's loopback, not a network.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use proto::server::{self, bind_tcp, bind_udp, Listeners, ServerConfig};
use proto::wire::Frame;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

fn echo(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (tcp, udp, stop) = rt.block_on(async {
        let listeners = Listeners {
            tcp: Some(bind_tcp(localhost).unwrap()),
            udp: Some(bind_udp(localhost).unwrap()),
            ..Listeners::default()
        };
        let tcp = listeners.tcp.as_ref().unwrap().local_addr().unwrap();
        let udp = listeners.udp.as_ref().unwrap().local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(server::run(
            listeners,
            ServerConfig::quiet_default().unwrap(),
            stop.clone(),
        ));
        (tcp, udp, stop)
    });

    let mut group = c.benchmark_group("echo round trip 64 B");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));

    let mut line = vec![b'a'; 64];
    line.push(b'\n');
    let mut stream = rt.block_on(async {
        let s = tokio::net::TcpStream::connect(tcp).await.unwrap();
        s.set_nodelay(true).unwrap();
        s
    });
    group.bench_function("tcp line", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut reply = vec![0u8; line.len()];
                let start = Instant::now();
                for _ in 0..iters {
                    stream.write_all(&line).await.unwrap();
                    stream.read_exact(&mut reply).await.unwrap();
                }
                start.elapsed()
            })
        })
    });

    let request = Frame::request(1, 2, vec![b'a'; 64]).to_bytes().unwrap();
    let mut framed = rt.block_on(async {
        let s = tokio::net::TcpStream::connect(tcp).await.unwrap();
        s.set_nodelay(true).unwrap();
        s
    });
    group.bench_function("tcp frame", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut reply = vec![0u8; request.len()];
                let start = Instant::now();
                for _ in 0..iters {
                    framed.write_all(&request).await.unwrap();
                    framed.read_exact(&mut reply).await.unwrap();
                }
                start.elapsed()
            })
        })
    });

    let socket = rt.block_on(async {
        let s = tokio::net::UdpSocket::bind(localhost).await.unwrap();
        s.connect(udp).await.unwrap();
        s
    });
    group.bench_function("udp datagram", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut reply = vec![0u8; 2048];
                let start = Instant::now();
                for _ in 0..iters {
                    socket.send(&line).await.unwrap();
                    socket.recv(&mut reply).await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    stop.cancel();
}

criterion_group!(benches, echo);
criterion_main!(benches);
