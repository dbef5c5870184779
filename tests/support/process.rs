//! Shared helpers for integration tests: start the real `proto` binary on
//! an ephemeral port and wait for it to say where it listens.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const PROTO: &str = env!("CARGO_BIN_EXE_proto");

/// `proto serve` arguments for every service, each on a free port.
#[allow(dead_code)] // not every test binary serves them all
pub const ALL_ON_FREE_PORTS: [&str; 7] = [
    "all",
    "--port",
    "0",
    "--secure-port",
    "0",
    "--sctp-port",
    "0",
];

/// A `proto serve …` child process, killed when dropped.
pub struct Server {
    pub child: Child,
    /// `(service, address)` from the "listening on" lines.
    pub addrs: Vec<(String, SocketAddr)>,
    /// The rest of stdout, line by line, read on a background thread.
    pub stdout: mpsc::Receiver<String>,
    pub stderr: Option<std::process::ChildStderr>,
}

impl Server {
    /// Starts `proto serve ARGS --port 0` and waits until every expected
    /// service has printed its address (the server accepts from then on).
    pub fn start(args: &[&str], services: usize) -> Server {
        let mut child = Command::new(PROTO)
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start proto serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        spawn_line_reader(stdout, tx);
        let mut addrs = Vec::new();
        while addrs.len() < services {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("server printed its address");
            if let Some((service, addr)) = parse_listening(&line) {
                addrs.push((service, addr));
            }
        }
        let stderr = child.stderr.take();
        Server {
            child,
            addrs,
            stdout: rx,
            stderr,
        }
    }

    pub fn addr(&self, service: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no {service} address in {:?}", self.addrs))
    }

    /// Sends SIGTERM, as `kill` or a service manager would.
    pub fn terminate(&self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit (with a limit) and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the server wrote to stderr (call after it exited).
    pub fn stderr_text(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// Waits for a stdout line containing `needle`.
    pub fn wait_stdout(&self, needle: &str, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no stdout line containing {needle:?} within {limit:?}"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_line_reader(stdout: ChildStdout, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// Parses "proto serve: tcp listening on 127.0.0.1:41234".
pub fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    let rest = line.strip_prefix("proto serve: ")?;
    let (service, addr) = rest.split_once(" listening on ")?;
    Some((service.to_string(), addr.trim().parse().ok()?))
}

/// Runs a command with `input` on stdin; returns (status, stdout, stderr).
pub fn run_with_input(
    cmd: &mut Command,
    input: &[u8],
) -> (std::process::ExitStatus, Vec<u8>, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    (
        out.status,
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An outside program a test drives (`nc`, `openssl`, `tcpdump`, `tshark`,
/// `cc`), treated one way everywhere: installed → a `Command` for it;
/// missing → locally a visible `SKIPPED` line and `None` (the test returns
/// and passes), and in CI — where `.ci/run` installs every such program and
/// sets `PROTO_INTEROP_REQUIRED=1` — a failure naming the package.
pub fn outside_program(test: &str, program: &str, package: &str) -> Option<Command> {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(Command::new(program));
    }
    assert!(
        std::env::var("PROTO_INTEROP_REQUIRED").as_deref() != Ok("1"),
        "{test}: PROTO_INTEROP_REQUIRED=1 but `{program}` is not installed \
         (apt-get install {package}; .ci/run does this)"
    );
    // Straight to stderr: the test harness captures eprintln!.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: `{program}` is not installed (apt-get install {package}; \
         set PROTO_INTEROP_REQUIRED=1 to make this a failure)"
    );
    None
}

/// OpenBSD netcat, as the README's tour uses it.
pub fn nc(test: &str) -> Option<Command> {
    outside_program(test, "nc", "netcat-openbsd")
}

/// True when the lab (network namespaces, TUN) can run here; false, after a
/// visible skip message, when it cannot. With PROTO_LAB_REQUIRED=1 (CI,
/// which is root) skipping is a failure instead.
pub fn lab_or_skip(test: &str) -> bool {
    match proto::lab::Lab::check_available() {
        Ok(()) => true,
        Err(e) => {
            assert!(
                std::env::var("PROTO_LAB_REQUIRED").as_deref() != Ok("1"),
                "{test}: PROTO_LAB_REQUIRED=1 but the lab cannot run here: {e}"
            );
            // Straight to stderr: the test harness captures eprintln!.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {e} (set PROTO_LAB_REQUIRED=1 to make this a failure)"
            );
            false
        }
    }
}

/// Runs `proto SUBCOMMAND ARGS --json` with its certificates in `certs`,
/// asserts it succeeded, and returns its JSON.
#[allow(dead_code)] // not every test binary reads JSON this way
pub fn proto_json(subcommand: &str, args: &[&str], certs: &std::path::Path) -> serde_json::Value {
    let out = Command::new(PROTO)
        .arg(subcommand)
        .args(args)
        .arg("--json")
        .env("PROTO_CERT_DIR", certs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "proto {subcommand} {args:?} failed: {stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"))
}
