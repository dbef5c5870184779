//! `proto client`: connect to an echo server and talk to it.

use crate::client::{interactive, DatagramClient, MessageClient, SctpClient, StreamClient};
use crate::echo::uppercase;
use crate::transport::quic::ClientQuicOptions;
use crate::transport::tls::{ClientTlsOptions, TlsVersion, Trust};
use crate::transport::{self, ConnectInfo, Stream, Target, Transport};
use crate::units::parse_duration;
use anyhow::bail;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  proto client tcp                      type lines, see them uppercased\n  proto client tcp -m hello -m world    send two lines, check both replies\n  proto client udp 127.0.0.1:8081 -m hi one datagram each way\n  proto client tcp --framed -m hello    the same in the binary frame format\n  proto client tls -m hello             TLS, verified against proto's local CA\n  proto client quic -m a -m b           QUIC; what was negotiated on stderr\n  proto client quic --0rtt -m hello     fetch a ticket, then hello in 0-RTT\n  proto client tls --json -m hi         timings and parameters as JSON\n  proto client sctp -m a -m b --streams 2\n                                        SCTP over UDP 9899: streams 0 and 1\n\nVerification: tls and quic check the server's certificate against proto's local\nCA (created by 'proto serve tls|quic', see its output) and the host name; --ca\ntrusts another CA, --server-name checks another name, --insecure checks nothing\n(and says so). 0-RTT early data can be replayed by anyone who recorded it: fine\nfor an idempotent echo, never for requests that change something."
)]
pub struct ClientArgs {
    /// Which protocol to speak.
    #[arg(value_enum)]
    pub transport: Transport,
    /// Server as HOST[:PORT]; default localhost and the transport's default
    /// port (8081 for tcp/udp, 8443 for tls/quic).
    pub target: Option<String>,
    /// Send this message and check that its uppercase comes back
    /// (repeatable). Exits 0 only if every reply is right.
    #[arg(short, long = "message", value_name = "TEXT")]
    pub messages: Vec<String>,
    /// Speak the binary frame format (protocols/frame.md) instead of text lines.
    #[arg(long)]
    pub framed: bool,
    /// Give up on connecting or on a reply after this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Print the results as JSON on stdout (with -m, --count or --duration).
    #[arg(long)]
    pub json: bool,
    /// tls/quic: trust this CA certificate (PEM) instead of proto's local CA.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,
    /// tls/quic: do NOT verify the server's certificate (anyone could
    /// pretend to be the server). Announced on every run.
    #[arg(long)]
    pub insecure: bool,
    /// tls/quic: the name to verify the certificate against and send as SNI
    /// (default: the host you connect to), e.g. when connecting by an address
    /// the certificate does not name.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// tls: offer only this TLS version.
    #[arg(long, value_enum, value_name = "VERSION")]
    pub tls_version: Option<TlsVersion>,
    /// tls/quic: connect once to get a session ticket, then connect again
    /// resuming the session; reports whether the server accepted.
    #[arg(long)]
    pub resume: bool,
    /// tls/quic: like --resume, and send the first message as 0-RTT early
    /// data; reports whether the server accepted it. Replayable: only for
    /// idempotent requests.
    #[arg(long = "0rtt")]
    pub zero_rtt: bool,
    /// quic: send each message as a QUIC DATAGRAM frame (unreliable) instead
    /// of on a stream.
    #[arg(long)]
    pub datagram: bool,
    /// sctp: send messages unordered (the U flag): each is delivered as soon
    /// as it is complete, never held back behind an earlier lost one.
    #[arg(long)]
    pub unordered: bool,
    #[command(flatten)]
    pub load: crate::cmd::load::LoadArgs,
}

/// One message sent and what came back.
#[derive(Debug, Serialize)]
struct Exchange {
    sent: String,
    reply: Option<String>,
    ok: bool,
    rtt_us: Option<f64>,
    error: Option<String>,
    /// sctp: the stream the message went on.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<u16>,
}

#[derive(Debug, Serialize)]
struct Report {
    transport: Transport,
    target: String,
    framed: bool,
    connection: ConnectInfo,
    /// With --resume / --0rtt: the first connection, made to get a ticket.
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket_connection: Option<ConnectInfo>,
    exchanges: Vec<Exchange>,
    /// sctp: tags, streams, cookie size and the peer's addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    sctp: Option<transport::sctp::SctpHandshake>,
    ok: bool,
}

/// Either kind of echo client, so the message loop is written once.
enum Echo {
    Stream(StreamClient<Stream>),
    Datagram(DatagramClient),
    /// QUIC DATAGRAM frames on an established connection.
    QuicDatagram(Box<transport::quic::QuicStream>, Duration),
    /// SCTP user messages over the streams of one association.
    Sctp(Box<SctpClient>),
}

impl Echo {
    async fn exchange(&mut self, message: &[u8], framed: bool) -> anyhow::Result<Vec<u8>> {
        match (self, framed) {
            (Echo::Stream(c), false) => c.exchange_line(message).await,
            (Echo::Stream(c), true) => Ok(c.exchange_frame(message).await?.payload.to_vec()),
            (Echo::Datagram(c), false) => c.exchange(message).await,
            (Echo::Datagram(c), true) => Ok(c.exchange_frame(message).await?.payload.to_vec()),
            (Echo::Sctp(c), false) => c.exchange(message).await,
            (Echo::Sctp(c), true) => Ok(c.exchange_frame(message).await?.payload.to_vec()),
            (Echo::QuicDatagram(q, limit), _) => {
                transport::quic::exchange_datagram(&q.connection, message, *limit).await
            }
        }
    }
}

pub async fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    if args.load.is_load() {
        return crate::cmd::load::run(&args).await;
    }
    let target = Target::parse(
        args.target.as_deref().unwrap_or("localhost"),
        args.transport.default_port(),
    )?;
    check_options(&args)?;
    let mut started = Instant::now();
    let mut info = ConnectInfo {
        transport: Some(args.transport),
        ..ConnectInfo::default()
    };
    let mut ticket_connection = None;
    let mut quic_endpoint = None;
    let mut sctp_handshake = None;
    let mut echo = match args.transport {
        Transport::Sctp => {
            let opts = transport::sctp::SctpOptions::default();
            let (association, connected) =
                transport::sctp::connect(&target, &opts, args.timeout).await?;
            info = connected;
            sctp_handshake = Some(association.handshake.clone());
            let streams = u16::try_from(args.load.streams)
                .ok()
                .filter(|s| (1..=transport::sctp::MAX_STREAMS).contains(s))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--streams must be 1 to {} for sctp",
                        transport::sctp::MAX_STREAMS
                    )
                })?;
            Echo::Sctp(Box::new(SctpClient::new(
                association,
                streams,
                args.unordered,
                args.timeout,
            )))
        }
        Transport::Tcp => {
            let (tcp, took) =
                transport::tcp::connect(&target, args.timeout, args.transport).await?;
            info.peer = tcp.peer_addr().ok();
            info.tcp_connect_us = Some(took.as_secs_f64() * 1e6);
            Echo::Stream(StreamClient::new(Stream::Tcp(tcp), args.timeout))
        }
        Transport::Udp => {
            let socket = transport::udp::connect(&target).await?;
            info.peer = socket.peer_addr().ok();
            Echo::Datagram(DatagramClient::new(socket, args.timeout))
        }
        Transport::Tls => {
            let trust = trust(&args)?;
            let mut opts = ClientTlsOptions::new(&trust, args.tls_version)?;
            opts.server_name = args.server_name.clone();
            if args.resume || args.zero_rtt {
                let first =
                    crate::client::resume::fetch_tls_ticket(&target, &opts, args.timeout).await?;
                if !args.json {
                    eprintln!("proto: first connection, to get a session ticket:");
                    print_negotiated(&first);
                }
                ticket_connection = Some(first);
            }
            opts.early_data = args.zero_rtt;
            started = Instant::now();
            let (stream, connected) = transport::tls::connect(&target, &opts, args.timeout).await?;
            info = connected;
            Echo::Stream(StreamClient::new(stream, args.timeout))
        }
        Transport::Quic => {
            let trust = trust(&args)?;
            let mut opts = ClientQuicOptions::new(&trust)?;
            opts.server_name = args.server_name.clone();
            if args.resume || args.zero_rtt {
                let first =
                    crate::client::resume::fetch_quic_ticket(&target, &opts, args.timeout).await?;
                if !args.json {
                    eprintln!("proto: first connection, to get a session ticket:");
                    print_negotiated(&first);
                }
                ticket_connection = Some(first);
            }
            opts.zero_rtt = args.zero_rtt;
            quic_endpoint = Some(opts.endpoint.clone());
            started = Instant::now();
            let (stream, connected) =
                transport::quic::connect(&target, &opts, args.timeout).await?;
            info = connected;
            match stream {
                Stream::Quic(q) if args.datagram => Echo::QuicDatagram(q, args.timeout),
                other => Echo::Stream(StreamClient::new(other, args.timeout)),
            }
        }
    };

    if args.messages.is_empty() {
        if !args.json && args.transport.is_encrypted() {
            print_negotiated(&info);
        }
        let connection = match &echo {
            Echo::Stream(client) => match client.get_ref() {
                Stream::Quic(q) => Some(q.connection.clone()),
                _ => None,
            },
            _ => None,
        };
        let result = interactive_session(echo, &args).await;
        if let (Some(connection), Some(endpoint)) = (connection, quic_endpoint) {
            // Close politely so the server is not left waiting for its idle timeout.
            connection.close(0u32.into(), b"done");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
        return result;
    }

    let mut exchanges = Vec::new();
    for message in &args.messages {
        let sent_at = Instant::now();
        let result = echo.exchange(message.as_bytes(), args.framed).await;
        let rtt = sent_at.elapsed();
        let stream = match &echo {
            Echo::Sctp(c) => Some(c.last_stream),
            _ => None,
        };
        if info.first_reply_us.is_none() && result.is_ok() {
            info.first_reply_us = Some(started.elapsed().as_secs_f64() * 1e6);
        }
        let expected = uppercase(message.as_bytes());
        let exchange = match result {
            Ok(reply) => Exchange {
                sent: message.clone(),
                ok: reply == expected,
                reply: Some(String::from_utf8_lossy(&reply).into_owned()),
                rtt_us: Some(rtt.as_secs_f64() * 1e6),
                error: None,
                stream,
            },
            Err(e) => Exchange {
                sent: message.clone(),
                reply: None,
                ok: false,
                rtt_us: None,
                error: Some(format!("{e:#}")),
                stream,
            },
        };
        let failed_hard = exchange.error.is_some() && !matches!(echo, Echo::Datagram(_));
        if !args.json {
            print_exchange(&exchange, &expected)?;
        }
        exchanges.push(exchange);
        // After a stream error the connection is unusable; UDP goes on.
        if failed_hard {
            break;
        }
    }
    match &echo {
        Echo::Stream(client) => client.get_ref().negotiated(&mut info),
        Echo::QuicDatagram(q, _) => q.negotiated(&mut info),
        Echo::Datagram(_) | Echo::Sctp(_) => {}
    }
    match echo {
        Echo::Stream(client) if args.transport == Transport::Quic => {
            if let Stream::Quic(q) = client.finish_and_drain(args.timeout).await {
                q.close();
            }
        }
        Echo::Stream(client) => {
            client.finish().await;
        }
        Echo::QuicDatagram(q, _) => q.close(),
        Echo::Sctp(c) => c.close(args.timeout).await,
        Echo::Datagram(_) => {}
    }
    if let Some(endpoint) = quic_endpoint {
        // Let the CONNECTION_CLOSE leave before the process does.
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    }
    if !args.json && args.transport.is_encrypted() {
        print_negotiated(&info);
    }
    if let (false, Some(h)) = (args.json, &sctp_handshake) {
        print_sctp(h, &info);
    }
    let ok = exchanges.len() == args.messages.len() && exchanges.iter().all(|e| e.ok);
    if args.json {
        let report = Report {
            transport: args.transport,
            target: target.to_string(),
            framed: args.framed,
            connection: info,
            ticket_connection,
            exchanges,
            sctp: sctp_handshake,
            ok,
        };
        outln!("{}", crate::output::json::pretty(&report)?);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_exchange(exchange: &Exchange, expected: &[u8]) -> anyhow::Result<()> {
    match (&exchange.reply, &exchange.error) {
        (Some(reply), _) if exchange.ok => outln!("{reply}"),
        (Some(reply), _) => {
            outln!("{reply}");
            eprintln!(
                "proto: wrong reply to {:?}: expected {:?}, got {:?}",
                exchange.sent,
                String::from_utf8_lossy(expected),
                reply
            );
        }
        (None, Some(error)) => eprintln!("proto: no reply to {:?}: {error}", exchange.sent),
        (None, None) => {}
    }
    Ok(())
}

async fn interactive_session(echo: Echo, args: &ClientArgs) -> anyhow::Result<ExitCode> {
    match echo {
        Echo::QuicDatagram(..) => bail!("--datagram needs messages (-m)"),
        Echo::Stream(client) if !args.framed => {
            interactive::lines(client.into_inner(), args.timeout).await?
        }
        Echo::Stream(mut client) => interactive::framed(&mut client).await?,
        Echo::Datagram(mut client) => interactive::datagrams(&mut client, args.framed).await?,
        Echo::Sctp(mut client) => {
            let result = interactive::datagrams(client.as_mut(), args.framed).await;
            client.close(args.timeout).await;
            result?
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check_options(args: &ClientArgs) -> anyhow::Result<()> {
    let encrypted = args.transport.is_encrypted();
    if !encrypted
        && (args.ca.is_some()
            || args.insecure
            || args.server_name.is_some()
            || args.resume
            || args.zero_rtt
            || args.tls_version.is_some())
    {
        bail!("--ca, --insecure, --server-name, --tls-version, --resume and --0rtt apply to tls and quic only");
    }
    if args.unordered && args.transport != Transport::Sctp {
        bail!("--unordered applies to sctp only (QUIC streams and TCP are always ordered; UDP has no order at all)");
    }
    if args.datagram && args.transport != Transport::Quic {
        bail!("--datagram applies to quic only (for UDP datagrams use 'proto client udp')");
    }
    if args.tls_version.is_some() && args.transport == Transport::Quic {
        bail!("QUIC always uses TLS 1.3: --tls-version applies to tls only");
    }
    if args.zero_rtt && args.tls_version == Some(TlsVersion::V1_2) {
        bail!("0-RTT early data exists only in TLS 1.3: drop --tls-version 1.2 or use --resume");
    }
    Ok(())
}

/// The trust decision for tls/quic, with the loud warning for --insecure.
fn trust(args: &ClientArgs) -> anyhow::Result<Trust> {
    super::trust_from_args(args.ca.as_deref(), args.insecure)
}

/// SCTP's handshake in one look, on stderr.
fn print_sctp(h: &transport::sctp::SctpHandshake, info: &ConnectInfo) {
    eprintln!(
        "proto: sctp association: tags 0x{:08x} (ours) / 0x{:08x} (server's), {} streams each way, State Cookie {} bytes, COOKIE-ECHO bundled with the first message",
        h.local_tag, h.peer_tag, h.outbound_streams.min(h.inbound_streams), h.cookie_bytes
    );
    let first = info
        .first_reply_us
        .map(|us| format!(", first reply {:.2} ms", us / 1e3))
        .unwrap_or_default();
    eprintln!(
        "proto: timing: INIT → INIT-ACK {:.2} ms ({} INIT{}){first}",
        h.init_to_init_ack_us / 1e3,
        h.init_attempts,
        if h.init_attempts == 1 { "" } else { "s" }
    );
    // Multi-homing is part of the claim; say plainly that it is not shown.
    let listed = if h.peer_addresses.is_empty() {
        "the server listed no extra address".to_string()
    } else {
        let list: Vec<String> = h.peer_addresses.iter().map(|a| a.to_string()).collect();
        format!("the server listed {}", list.join(", "))
    };
    eprintln!(
        "proto: multi-homing: NOT used ({listed}): proto's SCTP stack (sctp-proto) keeps one path per association, so there is no failover"
    );
}

/// How the server proved who it is, as it happened: a certificate checked
/// in a full handshake, or (resumed) a pre-shared key from an earlier
/// session's ticket, in which case no certificate was sent at all.
fn authentication(info: &ConnectInfo) -> Option<String> {
    let name = info.server_name.as_deref().unwrap_or("the server");
    Some(match (info.certificate_received, info.verified) {
        (Some(false), _) => format!(
            "resumed with a pre-shared key (ticket): no certificate sent, the key from an earlier session with {name} authenticates it"
        ),
        (_, Some(false)) => "certificate NOT verified (--insecure)".into(),
        (Some(true), Some(true)) => format!("certificate received and verified for {name}"),
        (None, Some(true)) => format!("authentication of {name} not finished yet"),
        _ => return None,
    })
}

/// The short "what was negotiated" report on stderr.
fn print_negotiated(info: &ConnectInfo) {
    let ms = |us: Option<f64>| us.map(|u| format!("{:.2} ms", u / 1e3));
    let mut what = vec![info.version.clone().unwrap_or_else(|| "?".into())];
    what.extend(info.cipher_suite.clone());
    what.extend(info.key_exchange_group.clone());
    what.push(format!("ALPN {}", info.alpn.as_deref().unwrap_or("none")));
    what.extend(authentication(info));
    eprintln!("proto: negotiated {}", what.join(", "));
    let yes_no = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    let early = match (info.early_data_offered, info.early_data_accepted) {
        (Some(true), Some(true)) => "sent and accepted",
        (Some(true), Some(false)) => "sent, REJECTED by the server",
        (Some(true), None) => "sent (acceptance unknown)",
        _ => "not sent",
    };
    eprintln!(
        "proto: resumed: {}; 0-RTT early data: {early}",
        yes_no(info.resumed)
    );
    let mut timing = Vec::new();
    if let Some(t) = ms(info.tcp_connect_us) {
        timing.push(format!("TCP connect {t}"));
    }
    match ms(info.handshake_us) {
        Some(t) => timing.push(format!(
            "{} handshake {t}",
            if info.transport == Some(Transport::Quic) {
                "QUIC"
            } else {
                "TLS"
            }
        )),
        None if info.early_data_offered == Some(true) => {
            timing.push("handshake overlapped with the first message (0-RTT)".into())
        }
        None => {}
    }
    if let Some(t) = ms(info.first_reply_us) {
        timing.push(format!("first reply {t}"));
    }
    if !timing.is_empty() {
        eprintln!("proto: timing: {}", timing.join(", "));
    }
    if let (Some(sent), Some(received)) = (info.handshake_bytes_sent, info.handshake_bytes_received)
    {
        eprintln!("proto: handshake bytes: {sent} sent, {received} received");
    }
}
