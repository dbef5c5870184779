//! `proto client`: connect to an echo server and talk to it.

use crate::cli::parse_duration;
use crate::client::{interactive, DatagramClient, StreamClient};
use crate::echo::uppercase;
use crate::transport::{self, ConnectInfo, Stream, Target, Transport};
use anyhow::bail;
use serde::Serialize;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  proto client tcp                      type lines, see them uppercased (Ctrl-D ends)\n  proto client tcp -m hello -m world    send two lines, check both replies\n  proto client udp 127.0.0.1:8081 -m hi one datagram each way\n  proto client tcp --framed -m hello    the same over the binary frame format"
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
}

#[derive(Debug, Serialize)]
struct Report {
    transport: Transport,
    target: String,
    framed: bool,
    connection: ConnectInfo,
    exchanges: Vec<Exchange>,
    ok: bool,
}

/// Either kind of echo client, so the message loop is written once.
enum Echo {
    Stream(StreamClient<Stream>),
    Datagram(DatagramClient),
}

impl Echo {
    async fn exchange(&mut self, message: &[u8], framed: bool) -> anyhow::Result<Vec<u8>> {
        match (self, framed) {
            (Echo::Stream(c), false) => c.exchange_line(message).await,
            (Echo::Stream(c), true) => Ok(c.exchange_frame(message).await?.payload.to_vec()),
            (Echo::Datagram(c), false) => c.exchange(message).await,
            (Echo::Datagram(c), true) => Ok(c.exchange_frame(message).await?.payload.to_vec()),
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
    let started = Instant::now();
    let mut info = ConnectInfo {
        transport: Some(args.transport),
        ..ConnectInfo::default()
    };
    let mut echo = match args.transport {
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
        Transport::Tls | Transport::Quic => {
            bail!(
                "{} is not available in this build yet",
                args.transport.name()
            )
        }
    };

    if args.messages.is_empty() {
        return interactive_session(echo, &args).await;
    }

    let mut exchanges = Vec::new();
    for message in &args.messages {
        let sent_at = Instant::now();
        let result = echo.exchange(message.as_bytes(), args.framed).await;
        let rtt = sent_at.elapsed();
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
            },
            Err(e) => Exchange {
                sent: message.clone(),
                reply: None,
                ok: false,
                rtt_us: None,
                error: Some(format!("{e:#}")),
            },
        };
        let failed_hard = exchange.error.is_some() && !matches!(echo, Echo::Datagram(_));
        if !args.json {
            print_exchange(&exchange, &expected);
        }
        exchanges.push(exchange);
        // After a stream error the connection is unusable; UDP goes on.
        if failed_hard {
            break;
        }
    }
    if let Echo::Stream(client) = echo {
        client.finish().await;
    }
    let ok = exchanges.len() == args.messages.len() && exchanges.iter().all(|e| e.ok);
    if args.json {
        let report = Report {
            transport: args.transport,
            target: target.to_string(),
            framed: args.framed,
            connection: info,
            exchanges,
            ok,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_exchange(exchange: &Exchange, expected: &[u8]) {
    match (&exchange.reply, &exchange.error) {
        (Some(reply), _) if exchange.ok => println!("{reply}"),
        (Some(reply), _) => {
            println!("{reply}");
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
}

async fn interactive_session(echo: Echo, args: &ClientArgs) -> anyhow::Result<ExitCode> {
    match echo {
        Echo::Stream(client) if !args.framed => {
            interactive::lines(client.into_inner(), args.timeout).await?
        }
        Echo::Stream(mut client) => interactive::framed(&mut client).await?,
        Echo::Datagram(mut client) => interactive::datagrams(&mut client, args.framed).await?,
    }
    Ok(ExitCode::SUCCESS)
}
