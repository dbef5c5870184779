//! QUIC: one connection, several independent streams.
//!
//! TCP gives an application exactly one ordered byte stream; HTTP/2 puts many
//! requests on it, so one lost packet holds up all of them (head-of-line
//! blocking). QUIC carries many streams in one connection, each with its own
//! ordering: a loss stalls only the stream whose data was lost. Opening a
//! stream costs no round trip — it is just a new stream id in a STREAM frame.
//!
//! This starts proto's QUIC echo server in-process, connects once (one
//! handshake), then opens two more bidirectional streams on the same
//! connection and talks on all three concurrently.
//!
//! ```text
//! cargo run --example quic_streams
//! ```

use proto::server::{self, Listeners, ServerConfig};
use proto::transport::certs::CertDir;
use proto::transport::quic::{self, ClientQuicOptions};
use proto::transport::tls::Trust;
use proto::transport::{Stream, Target};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cert_dir = std::env::temp_dir().join(format!("proto-example-{}", std::process::id()));
    let certs = CertDir::new(&cert_dir);
    let listeners = Listeners {
        quic: Some(server::bind_udp("127.0.0.1:0".parse()?)?),
        ..Listeners::default()
    };
    let port = listeners
        .addresses()
        .get(proto::transport::Transport::Quic)?
        .port();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(server::run(
        listeners,
        ServerConfig::quiet_with_cert_dir(&certs)?,
        shutdown.clone(),
    ));

    let target = Target::parse(&format!("127.0.0.1:{port}"), port)?;
    let options = ClientQuicOptions::new(&Trust::ca_file(&certs.ca_cert())?)?;
    let (stream, info) = quic::connect(&target, &options, LIMIT).await?;
    let Stream::Quic(first) = stream else {
        anyhow::bail!("quic::connect returned a non-QUIC stream");
    };
    println!(
        "one handshake: {:.2} ms ({})",
        info.handshake_us.unwrap_or(0.0) / 1e3,
        info.version.as_deref().unwrap_or("QUIC")
    );

    // Two more streams on the same connection: no handshake, no round trip
    // to open them. Each is a (send, receive) pair with its own ordering.
    let connection = first.connection.clone();
    let mut tasks = Vec::new();
    for text in ["stream two says hi", "stream three says hi"] {
        let connection = connection.clone();
        tasks.push(tokio::spawn(async move {
            let (mut send, mut recv) = connection.open_bi().await?;
            send.write_all(format!("{text}\n").as_bytes()).await?;
            send.finish()?; // our half is done: the server echoes and closes its half
            let reply = recv.read_to_end(64 * 1024).await?;
            anyhow::Ok(format!(
                "stream id {}: {}",
                send.id().index(),
                String::from_utf8_lossy(&reply).trim_end()
            ))
        }));
    }
    // Meanwhile, the first stream carries on as a plain byte stream.
    let mut first = Stream::Quic(first);
    first.write_all(b"stream one says hi\n").await?;
    let mut line = vec![0u8; 64];
    let n = first.read(&mut line).await?;
    println!(
        "first stream: {}",
        String::from_utf8_lossy(&line[..n]).trim_end()
    );
    for task in tasks {
        println!("{}", task.await??);
    }
    println!(
        "all on one connection to {} (stats: {} UDP datagrams sent)",
        connection.remote_address(),
        connection.stats().udp_tx.datagrams
    );

    connection.close(0u32.into(), b"done");
    shutdown.cancel();
    server.await??;
    let _ = std::fs::remove_dir_all(&cert_dir);
    Ok(())
}
