//! Resumption needs a first connection: it is the one that receives the
//! server's session ticket (TLS 1.3 `NewSessionTicket`, or a TLS 1.2
//! session ID), which the client's options keep. The *next* connection with
//! the same options can then skip the certificate (resumption) and, on TLS
//! 1.3 and QUIC, send its request in the very first flight (0-RTT).

use super::StreamClient;
use crate::transport::{quic, tls, ConnectInfo, Stream, Target};
use anyhow::Context;
use std::time::{Duration, Instant};

/// A full TLS connection that sends one line, reads its reply and closes
/// cleanly, so that the ticket lands in `opts.config`'s session store.
pub async fn fetch_tls_ticket(
    target: &Target,
    opts: &tls::ClientTlsOptions,
    limit: Duration,
) -> anyhow::Result<ConnectInfo> {
    let plain = tls::ClientTlsOptions {
        early_data: false,
        ..opts.clone()
    };
    let (stream, mut info) = tls::connect(target, &plain, limit).await?;
    one_echo_then_drain(stream, &mut info, limit).await?;
    Ok(info)
}

/// A full QUIC connection with one echo on one stream, so that the ticket
/// lands in `opts.sessions`; the next [`quic::connect`] with `zero_rtt`
/// can then send 0-RTT data.
pub async fn fetch_quic_ticket(
    target: &Target,
    opts: &quic::ClientQuicOptions,
    limit: Duration,
) -> anyhow::Result<ConnectInfo> {
    let plain = quic::ClientQuicOptions {
        zero_rtt: false,
        ..opts.clone()
    };
    let (stream, mut info) = quic::connect(target, &plain, limit).await?;
    let stream = one_echo_then_drain(stream, &mut info, limit).await?;
    if let Stream::Quic(q) = &stream {
        // QUIC's ticket (NewSessionTicket in a CRYPTO frame) follows the
        // handshake and need not ride with the echo: give it a moment.
        let deadline = Instant::now() + limit.min(Duration::from_secs(2));
        while !quic::has_ticket(opts.sessions.as_ref(), &info) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        q.close();
    }
    Ok(info)
}

/// One echo, then read until the server closes: TLS 1.3 tickets follow the
/// server's Finished, and reading to the end makes sure none is left in flight.
async fn one_echo_then_drain(
    stream: Stream,
    info: &mut ConnectInfo,
    limit: Duration,
) -> anyhow::Result<Stream> {
    let mut client = StreamClient::new(stream, limit);
    client
        .exchange_line(b"ticket please")
        .await
        .context("first connection (to get a session ticket)")?;
    let stream = client.finish_and_drain(limit).await;
    stream.negotiated(info);
    Ok(stream)
}
