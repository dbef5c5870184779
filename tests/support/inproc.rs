//! Shared by the TLS and QUIC integration tests: a real proto server run
//! in-process on port 0 with its own certificate directory.

use proto::server::{self, Listeners, ServerConfig, ServerStats, ServerSummary};
use proto::transport::certs::CertDir;
use proto::transport::tls::{TlsVersion, Trust};
use proto::transport::Target;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const LIMIT: Duration = Duration::from_secs(10);

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "proto-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub struct TestServer {
    /// Plain TCP (the thread-per-connection server).
    pub tcp: SocketAddr,
    pub tls: SocketAddr,
    pub quic: SocketAddr,
    pub certs: CertDir,
    pub stats: Arc<ServerStats>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<ServerSummary>>,
}

pub struct Options {
    /// Share another server's certificate directory (same CA and certificate).
    pub cert_dir: Option<CertDir>,
    pub tls_version: Option<TlsVersion>,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// Changes the rest of the server's configuration (limits, timeouts).
    pub configure: fn(&mut ServerConfig),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cert_dir: None,
            tls_version: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            configure: |_| {},
        }
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestServer {
        let certs = options
            .cert_dir
            .clone()
            .unwrap_or_else(|| CertDir::new(temp_dir("certs")));
        let mut config = ServerConfig::quiet_with_cert_dir(&certs).expect("certificates");
        config.quiet = std::env::var_os("PROTO_TEST_LOG").is_none();
        config.tls_version = options.tls_version;
        config.handshake_timeout = options.handshake_timeout;
        config.idle_timeout = options.idle_timeout;
        (options.configure)(&mut config);
        let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listeners = Listeners {
            tcp: Some(server::bind_tcp(localhost).unwrap()),
            tls: Some(server::bind_tcp(localhost).unwrap()),
            quic: Some(server::bind_udp(localhost).unwrap()),
            ..Listeners::default()
        };
        let tcp = listeners.tcp.as_ref().unwrap().local_addr().unwrap();
        let tls = listeners.tls.as_ref().unwrap().local_addr().unwrap();
        let quic = listeners.quic.as_ref().unwrap().local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stats = Arc::new(ServerStats::default());
        let task = tokio::spawn(server::run_observed(
            listeners,
            config,
            shutdown.clone(),
            stats.clone(),
        ));
        TestServer {
            tcp,
            tls,
            quic,
            certs,
            stats,
            shutdown,
            task,
        }
    }

    pub fn tls_target(&self) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: self.tls.port(),
        }
    }

    pub fn quic_target(&self) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: self.quic.port(),
        }
    }

    pub fn trust(&self) -> Trust {
        Trust::ca_file(&self.certs.ca_cert()).unwrap()
    }

    /// Stops the server and returns its summary.
    pub async fn stop(self) -> ServerSummary {
        self.shutdown.cancel();
        let summary = tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("the server stops in time")
            .expect("the server task does not panic")
            .expect("the server ends without error");
        let _ = std::fs::remove_dir_all(&self.certs.dir);
        summary
    }
}

/// Waits until `condition` holds, failing the test after `LIMIT`.
pub async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < LIMIT, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn count(counter: &AtomicU64) -> u64 {
    counter.load(Relaxed)
}

/// A TCP relay on 127.0.0.1 that delays every chunk by `one_way` in each
/// direction: a round trip through it costs `2 × one_way` more. (The TCP
/// handshake with the relay itself stays local.)
pub async fn delaying_tcp_relay(to: SocketAddr, one_way: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(to).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(delayed_pipe(cr, sw, one_way));
            tokio::spawn(delayed_pipe(sr, cw, one_way));
        }
    });
    addr
}

async fn delayed_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = tokio::time::Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    while let Some((due, bytes)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if to.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// A UDP relay on 127.0.0.1 for one client that delays every datagram by
/// `one_way` in each direction, keeping their order (one queue per
/// direction: a spawned timer per datagram could reorder a flight).
pub async fn delaying_udp_relay(to: SocketAddr, one_way: Duration) -> SocketAddr {
    let outer = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let inner = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = outer.local_addr().unwrap();
    let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    type Queue = tokio::sync::mpsc::UnboundedSender<(tokio::time::Instant, Vec<u8>)>;
    fn sender(
        socket: Arc<tokio::net::UdpSocket>,
        dest: impl Fn() -> Option<SocketAddr> + Send + 'static,
    ) -> Queue {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
        tokio::spawn(async move {
            while let Some((due, bytes)) = rx.recv().await {
                tokio::time::sleep_until(due).await;
                if let Some(dest) = dest() {
                    let _ = socket.send_to(&bytes, dest).await;
                }
            }
        });
        tx
    }
    let to_server = sender(inner.clone(), move || Some(to));
    let c = client.clone();
    let to_client = sender(outer.clone(), move || *c.lock().unwrap());
    let c = client.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = outer.recv_from(&mut buf).await {
            *c.lock().unwrap() = Some(from);
            let _ = to_server.send((tokio::time::Instant::now() + one_way, buf[..n].to_vec()));
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, _)) = inner.recv_from(&mut buf).await {
            let _ = to_client.send((tokio::time::Instant::now() + one_way, buf[..n].to_vec()));
        }
    });
    addr
}
