//! `proto serve`: run echo servers until Ctrl-C, then print a summary.

use crate::cli::{parse_duration, parse_size};
use crate::server::{self, bind_tcp, bind_udp, Listeners, ServerConfig};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Which echo service to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    /// Text lines (or frames) over TCP, port 8081: try `nc localhost 8081`.
    Tcp,
    /// One datagram in, one datagram out, port 8081/udp: try `nc -u localhost 8081`.
    Udp,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  proto serve tcp            then, in another terminal: nc localhost 8081\n  proto serve udp            then: nc -u localhost 8081\n  proto serve tcp --port 0   let the system pick a free port (printed at start)"
)]
pub struct ServeArgs {
    /// Which service to run.
    #[arg(value_enum)]
    pub service: Service,
    /// Address to listen on (0.0.0.0 or :: to accept other machines).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on; 0 picks a free one. Default: 8081.
    #[arg(long)]
    pub port: Option<u16>,
    /// Longest accepted text line; a longer one gets an error and the connection is closed.
    #[arg(long, default_value = "64KiB", value_parser = parse_size, value_name = "BYTES")]
    pub max_line: usize,
    /// Close connections that send nothing for this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// No log line per connection.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let port = args.port.unwrap_or(server::PLAIN_PORT);
    let addr = SocketAddr::new(args.host, port);
    let listeners = match args.service {
        Service::Tcp => Listeners {
            tcp: Some(bind_tcp(addr)?),
            ..Listeners::default()
        },
        Service::Udp => Listeners {
            udp: Some(bind_udp(addr)?),
            ..Listeners::default()
        },
    };
    for (service, addr) in listeners.addresses() {
        println!("proto serve: {service} listening on {addr}");
    }
    use std::io::Write;
    std::io::stdout().flush()?;

    let config = ServerConfig {
        max_line: args.max_line,
        idle_timeout: args.idle_timeout,
        quiet: args.quiet,
        ..ServerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        server::shutdown_signal().await;
        eprintln!("proto serve: shutting down (open connections may finish their message)");
        on_signal.cancel();
    });
    let summary = server::run(listeners, config, shutdown).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("proto serve: {summary}");
    }
    Ok(ExitCode::SUCCESS)
}
