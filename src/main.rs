//! The `proto` binary: parse the command line, dispatch, report errors.

use clap::Parser;
use proto::cli::{Cli, Command};
use proto::cmd;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.may_build_lab() {
        // Without root, move into a user namespace of our own, where the
        // lab can be built; this needs a single-threaded process, so it comes
        // before the runtime. A failure is kept and reported if a lab is needed.
        proto::lab::userns::prepare();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => cmd::serve::run(args).await,
            Command::Client(args) => cmd::client::run(args).await,
            Command::Bench(args) => cmd::bench::run(args).await,
            Command::Codec(command) => cmd::codec::run(command),
            Command::Endian(args) => cmd::codec::endian(args),
            Command::Compare(args) => cmd::compare::run(args).await,
            Command::Lab(args) => cmd::lab::run(args).await,
            Command::Hol(args) => cmd::hol::run(args).await,
            Command::Transfer(args) => cmd::transfer::run(args).await,
            Command::Trace(args) => cmd::trace::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        // `proto … | head`: the reader has what it wanted.
        Err(e) if cmd::is_stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain: "connecting: connection refused: …"
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
