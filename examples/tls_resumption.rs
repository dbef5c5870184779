//! TLS 1.3 resumption and 0-RTT, seen from the client.
//!
//! A first, full handshake proves the server's identity with its
//! certificate and ends with the server sending a *session ticket*. A second
//! connection presents that ticket: the server skips the certificate
//! (resumption), and with TLS 1.3 the client may even send its request in
//! the very first flight, beside the ClientHello ("0-RTT early data"). The
//! price: early data can be replayed by an attacker, and has no forward
//! secrecy — which is why the server must *accept* it explicitly.
//!
//! This starts proto's own TLS server in-process on a free port, with a
//! fresh local CA in a temporary directory, and connects three times.
//!
//! ```text
//! cargo run --example tls_resumption
//! ```

use proto::client::{resume, StreamClient};
use proto::server::{self, Listeners, ServerConfig};
use proto::transport::certs::CertDir;
use proto::transport::tls::{self, TlsVersion, Trust};
use proto::transport::{ConnectInfo, Target};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The server: TLS only, on 127.0.0.1 and a port the kernel picks.
    let cert_dir = std::env::temp_dir().join(format!("proto-example-{}", std::process::id()));
    let certs = CertDir::new(&cert_dir);
    let listeners = Listeners {
        tls: Some(server::bind_tcp("127.0.0.1:0".parse()?)?),
        ..Listeners::default()
    };
    let port = listeners
        .addresses()
        .get(proto::transport::Transport::Tls)?
        .port();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(server::run(
        listeners,
        ServerConfig::quiet_with_cert_dir(&certs)?,
        shutdown.clone(),
    ));

    // The client trusts the CA that signed the server's certificate, and
    // keeps its options (and so its ticket store) across connections.
    let target = Target::parse(&format!("127.0.0.1:{port}"), port)?;
    let trust = Trust::ca_file(&certs.ca_cert())?;
    let mut options = tls::ClientTlsOptions::new(&trust, Some(TlsVersion::V1_3))?;

    // 1. A full handshake, which leaves a ticket in `options`.
    let first = resume::fetch_tls_ticket(&target, &options, LIMIT).await?;
    report("full handshake", &first);

    // 2. Resumed, with the request sent as 0-RTT early data.
    options.early_data = true;
    let (stream, mut info) = tls::connect(&target, &options, LIMIT).await?;
    let mut client = StreamClient::new(stream, LIMIT);
    let reply = client
        .exchange_line(b"sent before the handshake finished")
        .await?;
    let stream = client.finish_and_drain(LIMIT).await;
    stream.negotiated(&mut info); // early data's fate is known after the reply
    report("resumed with 0-RTT", &info);
    println!("  reply: {}", String::from_utf8_lossy(&reply));

    shutdown.cancel();
    let summary = server.await??;
    println!(
        "server: {} TLS handshakes, {} resumed, {} with early data accepted",
        summary.tls.completed, summary.tls.resumed, summary.tls.early_data_accepted
    );
    let _ = std::fs::remove_dir_all(&cert_dir);
    Ok(())
}

fn report(what: &str, info: &ConnectInfo) {
    let yes_no = |v: Option<bool>| match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    };
    println!(
        "{what}: {} {}, resumed: {}, early data offered: {}, accepted: {}, certificate checked: {}",
        info.version.as_deref().unwrap_or("?"),
        info.cipher_suite.as_deref().unwrap_or("?"),
        yes_no(info.resumed),
        yes_no(info.early_data_offered),
        yes_no(info.early_data_accepted),
        // On resumption the server sends no certificate: nothing to verify.
        if info.resumed == Some(true) {
            "not sent (resumed)"
        } else {
            yes_no(info.verified)
        },
    );
}
