//! One file per subcommand: arguments → servers/clients/measurements → output.

use std::io::Write as _;

/// Standard output was closed by its reader (`proto client … --json | head`).
/// Not a failure: the command stops, `main` exits quietly with success, and
/// everything on the way out (servers, the lab) is dropped as usual.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct StdoutClosed;

/// Writes `args` to standard output. A closed pipe becomes [`StdoutClosed`]
/// (instead of `println!`'s panic); other errors are reported.
pub fn write_stdout(args: std::fmt::Arguments) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// Whether `error` only says that standard output was closed.
pub fn is_stdout_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|e| e.is::<StdoutClosed>())
}

/// `print!` that ends the command quietly when stdout is closed (use in a
/// function returning `anyhow::Result`).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cmd::write_stdout(format_args!($($arg)*))?
    };
}

/// `println!` that ends the command quietly when stdout is closed.
macro_rules! outln {
    () => { $crate::cmd::write_stdout(format_args!("\n"))? };
    ($($arg:tt)*) => {
        $crate::cmd::write_stdout(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

pub mod bench;
pub mod client;
pub mod codec;
pub mod compare;
pub mod hol;
pub mod lab;
pub mod link_args;
pub mod load;
pub mod serve;
pub mod sweep;
pub mod trace;
pub mod transfer;
pub mod values;

/// The trust decision for TLS and QUIC clients (`--ca`, `--insecure`), with
/// the loud warning for `--insecure` in every mode that has the flag
/// (client, load, compare): skipping verification must never be silent.
pub fn trust_from_args(
    ca: Option<&std::path::Path>,
    insecure: bool,
) -> anyhow::Result<crate::transport::tls::Trust> {
    let trust = crate::transport::tls::Trust::from_options(ca, insecure)?;
    if trust.is_insecure() {
        eprintln!("{INSECURE_WARNING}");
    }
    Ok(trust)
}

/// What `--insecure` prints on stderr.
pub const INSECURE_WARNING: &str = "proto: WARNING: --insecure: the server's certificate is NOT verified; anyone on the path could pretend to be the server";
