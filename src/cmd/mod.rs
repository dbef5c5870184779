//! One file per subcommand: arguments → servers/clients/measurements → output.

pub mod bench;
pub mod client;
pub mod codec;
pub mod compare;
pub mod hol;
pub mod lab;
pub mod load;
pub mod serve;
pub mod transfer;

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
