//! `proto lab [link options] -- COMMAND [ARGS]`: run COMMAND on the client
//! host of an emulated network, with proto's servers on the server host.
//!
//! ```text
//! proto lab --rtt 329ms -- sh -c 'proto client tls $PROTO_LAB_SERVER -m hello'
//! ```
//!
//! Life cycle: build the lab → start the server side → run COMMAND with
//! `PROTO_LAB_SERVER` set → wait for it (or for Ctrl-C / SIGTERM, which we
//! pass on) → stop servers, kill stragglers, tear the lab down → print the
//! link counters → exit with COMMAND's exit code.

use crate::cmd::link_args::LinkArgs;
use crate::lab::child::{self, NsChild};
use crate::lab::userns;
use crate::lab::Lab;
use crate::output::link::describe;
use crate::server::{self, Listeners, ServerConfig};
use crate::transport::certs::CertDir;
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// eprintln! that ignores a closed stderr (`proto lab … 2>&1 | head`)
/// instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

#[derive(clap::Args, Debug)]
#[command(after_help = "\
The client host is 10.77.0.1 and the server host 10.77.0.2; COMMAND gets
PROTO_LAB_SERVER and PROTO_LAB_CLIENT in its environment. Without root,
proto builds the lab inside a user namespace of its own (COMMAND then runs
as root of that namespace only, powerless outside it); that needs user
namespaces enabled and a world-accessible /dev/net/tun (mode 0666, as
desktop distributions ship it). COMMAND and everything it starts live in a
PID namespace: nothing is left behind at exit, even if proto is killed.

Examples:
  proto lab --rtt 329ms -- \\
      sh -c 'proto client tls $PROTO_LAB_SERVER -m hello'
  proto lab --rtt 40ms --loss 2% --loss-burst 3 --pcap wifi.pcap -- \\
      sh -c 'nc $PROTO_LAB_SERVER 8081'
  proto lab --rtt 20ms --up-rate 10mbit --queue 50 --server 'iperf3 -s' -- sh")]
pub struct LabArgs {
    #[command(flatten)]
    pub link: LinkArgs,
    /// Write every packet crossing the link, both directions, to this pcap
    /// file (as the client sees them), for tcpdump -r or Wireshark.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Print the link counters as JSON on stdout at exit.
    #[arg(long)]
    pub json: bool,
    /// Run this shell command on the server host instead of proto's servers.
    #[arg(long, value_name = "CMD")]
    pub server: Option<String>,
    /// The command to run on the client host (default: an interactive $SHELL).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub async fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    let mut config = args.link.to_config()?;
    config.pcap = args.pcap.clone();

    // Take over SIGINT/SIGTERM/SIGHUP before anything exists, so Ctrl-C always
    // goes through the clean-up below instead of killing proto outright.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    // The terminal went away (ssh dropped): clean up the same way.
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;

    let banner_config = config.clone();
    let lab = tokio::task::spawn_blocking(move || Lab::start(config))
        .await
        .context("the lab set-up thread failed")??;
    child::become_subreaper().context("becoming a child subreaper")?;
    // Kills anything COMMAND left running, also if we unwind from a panic.
    let _sweeper = OrphanSweeper;

    say!(
        "proto lab: client {} ⇄ server {}  (MTU {}, seed {})",
        lab.client_ip(),
        lab.server_ip(),
        banner_config.mtu,
        banner_config.seed
    );
    if let Some(userns::Privilege::UserNamespace { outside_uid }) = userns::privilege() {
        say!(
            "  without root: in a user namespace of proto's own (root there = uid {outside_uid} outside, powerless beyond it)"
        );
    }
    say!(
        "  up   client→server: {}",
        describe(&banner_config.client_to_server)
    );
    say!(
        "  down server→client: {}",
        describe(&banner_config.server_to_client)
    );
    say!("  {}", lab.host_buffers().describe());

    let shutdown = CancellationToken::new();
    let mut server = start_server(&lab, args.server.as_deref(), shutdown.clone()).await?;

    let mut shell_rc = None;
    let (program, program_args) = match args.command.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => {
            let shell = std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into());
            say!(
                "proto lab: a shell on the client host {} (the server is {}, also in $PROTO_LAB_SERVER); `exit` or Ctrl-D leaves the lab",
                lab.client_ip(),
                lab.server_ip()
            );
            let (args, rc) = lab_shell_args(&shell);
            shell_rc = rc;
            (shell, args)
        }
    };
    let mut cmd = Command::new(&program);
    cmd.args(&program_args)
        .env("PROTO_LAB_SERVER", lab.server_ip().to_string())
        .env("PROTO_LAB_CLIENT", lab.client_ip().to_string())
        // What the link does, for programs that label their output with it
        // (`proto client --plot` puts it in the chart's title).
        .env(
            "PROTO_LAB_LINK",
            crate::output::link::describe_both(
                &banner_config.client_to_server,
                &banner_config.server_to_client,
            ),
        );
    if args.command.is_empty() {
        // sh, dash and ksh take their prompt from the environment.
        cmd.env("PS1", LAB_PROMPT);
    }
    let mut client =
        NsChild::spawn(lab.client_ns(), cmd).with_context(|| format!("starting {program:?}"))?;

    if std::env::var_os("PROTO_LAB_TEST_PANIC").is_some() {
        // Lets the tests check that a bug in proto leaves nothing behind.
        panic!("PROTO_LAB_TEST_PANIC is set: simulating a bug inside proto lab");
    }

    let (status, signalled) = tokio::select! {
        s = client.wait() => (Some(s.context("waiting for COMMAND")?), None),
        _ = sigint.recv() => (None, Some(libc::SIGINT)),
        _ = sigterm.recv() => (None, Some(libc::SIGTERM)),
        _ = sighup.recv() => (None, Some(libc::SIGHUP)),
    };
    let status = match status {
        Some(s) => s,
        None => client
            .terminate(Duration::from_secs(2))
            .await
            .context("stopping COMMAND")?,
    };

    // Let what is on its way finish crossing (and enter the capture): the
    // FIN of COMMAND's last connection, the server's answering FIN, the
    // last ACKs. Then stop the servers (which may close connections of
    // their own) and let those packets cross too.
    let round_trip = banner_config.client_to_server.delay
        + banner_config.server_to_client.delay
        + banner_config.client_to_server.jitter
        + banner_config.server_to_client.jitter;
    let (quiet, limit) = (
        Duration::from_millis(100),
        Duration::from_secs(2) + 4 * round_trip,
    );
    tokio::task::block_in_place(|| lab.drain(quiet, limit));
    shutdown.cancel();
    server.stop().await;
    tokio::task::block_in_place(|| lab.drain(quiet, limit));
    child::kill_orphans(&[]);
    let host_buffers = lab.host_buffers().clone();
    let counters = tokio::task::spawn_blocking(move || lab.shutdown())
        .await
        .context("tearing down the lab")?;

    // write! instead of print!: a closed pipe (`proto lab … | head`) must
    // not turn into a panic at the very end.
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(crate::output::link::counters_table(&counters).as_bytes());
    let fidelity = crate::lab::fidelity::assess_lab(&banner_config, &counters);
    let _ = std::io::stderr().write_all(crate::output::link::fidelity_report(&fidelity).as_bytes());
    if args.json {
        // The link's counters, with the hosts' buffer limits and the
        // link's fidelity beside them.
        let mut value = serde_json::to_value(counters).context("encoding counters")?;
        value["host_buffers"] = serde_json::to_value(&host_buffers)?;
        value["fidelity"] = serde_json::to_value(&fidelity)?;
        let json = crate::output::json::pretty(&value).context("encoding counters")?;
        let _ = writeln!(std::io::stdout(), "{json}");
    }
    if let Some(rc) = shell_rc {
        let _ = std::fs::remove_file(rc);
    }
    let code = match signalled {
        Some(sig) => 128 + sig as u8,
        None => child::exit_code(status),
    };
    Ok(ExitCode::from(code))
}

/// The start of the lab shell's prompt: a shell inside the lab looks like
/// any other, and commands typed in the wrong one measure the wrong network.
const LAB_PROMPT: &str = "[proto lab] $ ";

/// Arguments that make an interactive `shell` show [`LAB_PROMPT`]. bash
/// sets its prompt in `~/.bashrc`, overriding the environment, so it gets
/// an rc file that reads `~/.bashrc` first and then prefixes the prompt;
/// that file is returned so it can be removed afterwards.
fn lab_shell_args(shell: &str) -> (Vec<String>, Option<PathBuf>) {
    if !shell.ends_with("/bash") && shell != "bash" {
        return (Vec::new(), None);
    }
    let rc = std::env::temp_dir().join(format!("proto-lab-bashrc-{}", std::process::id()));
    let script = "[ -f ~/.bashrc ] && . ~/.bashrc\nPS1=\"[proto lab] ${PS1:-\\$ }\"\n";
    match std::fs::write(&rc, script) {
        Ok(()) => (
            vec!["--rcfile".into(), rc.to_string_lossy().into_owned()],
            Some(rc),
        ),
        Err(_) => (Vec::new(), None),
    }
}

struct OrphanSweeper;

impl Drop for OrphanSweeper {
    fn drop(&mut self) {
        child::kill_orphans(&[]);
    }
}

/// What runs on the server host.
enum ServerSide {
    InProcess(Vec<JoinHandle<()>>),
    Command(NsChild),
}

impl ServerSide {
    async fn stop(&mut self) {
        match self {
            ServerSide::InProcess(tasks) => {
                for t in tasks.drain(..) {
                    let _ = t.await;
                }
            }
            ServerSide::Command(child) => {
                let _ = child.terminate(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn start_server(
    lab: &Lab,
    command: Option<&str>,
    shutdown: CancellationToken,
) -> anyhow::Result<ServerSide> {
    match command {
        None => {
            let tasks = start_default_server(lab, shutdown).await?;
            say!(
                "  server: proto's echo servers on {}: TCP and UDP 8081, TLS and QUIC 8443",
                lab.server_ip()
            );
            Ok(ServerSide::InProcess(tasks))
        }
        Some(cmd_line) => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(cmd_line)
                .env("PROTO_LAB_SERVER", lab.server_ip().to_string())
                .env("PROTO_LAB_CLIENT", lab.client_ip().to_string());
            let mut child = NsChild::spawn(lab.server_ns(), cmd)
                .with_context(|| format!("starting the server {cmd_line:?}"))?;
            say!("  server: {cmd_line}");
            wait_for_listener(lab, &mut child, Duration::from_secs(5)).await?;
            Ok(ServerSide::Command(child))
        }
    }
}

/// Wait until the server host has a listening TCP socket or a bound UDP
/// socket, so COMMAND does not race the server's start-up.
async fn wait_for_listener(lab: &Lab, child: &mut NsChild, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if lab.in_server(server_has_socket) {
            return Ok(());
        }
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_millis(10), child.wait()).await
        {
            bail!("the server command exited ({status}) before listening on any port");
        }
        if start.elapsed() > limit {
            say!("  (server has no listening socket after {limit:?}; starting COMMAND anyway)");
            return Ok(());
        }
    }
}

/// Reads this thread's namespace's socket tables: a TCP socket in state 0A
/// (LISTEN) or any UDP socket.
fn server_has_socket() -> bool {
    let table = |name: &str| {
        std::fs::read_to_string(format!("/proc/thread-self/net/{name}")).unwrap_or_default()
    };
    let tcp_listen = table("tcp")
        .lines()
        .chain(table("tcp6").lines())
        .skip(1)
        .any(|l| l.split_whitespace().nth(3) == Some("0A"));
    let udp = table("udp").lines().count() > 1 || table("udp6").lines().count() > 1;
    tcp_listen || udp
}

/// Proto's own servers on the server host, as `proto serve all` runs
/// them: TCP and UDP echo on 8081, TLS and QUIC on 8443. The sockets are
/// created on a thread inside the server namespace (so they live there);
/// the tokio runtime drives them from any thread.
async fn start_default_server(
    lab: &Lab,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let ip = lab.server_ip();
    // The certificate also names the lab address, so clients that dial
    // 10.77.0.2 can verify it without --server-name.
    let mut config = ServerConfig::quiet_with_certs(&CertDir::default_dir()?, &[ip.to_string()])?;
    // COMMAND inherits SSLKEYLOGFILE and its client logs each session's
    // secrets; the server logging the same ones again would write every
    // key twice into the file.
    config.key_log = false;
    let listeners = lab
        .in_server(|| {
            Listeners::bind_all(
                ip,
                crate::wire::limits::PLAIN_PORT,
                crate::wire::limits::SECURE_PORT,
                crate::wire::sctp::UDP_ENCAPS_PORT,
            )
        })
        .context("binding the echo servers on the server host")?;
    let task = tokio::spawn(async move {
        if let Err(e) = server::run(listeners, config, shutdown).await {
            eprintln!("proto lab: the in-process server failed: {e:#}");
        }
    });
    Ok(vec![task])
}
