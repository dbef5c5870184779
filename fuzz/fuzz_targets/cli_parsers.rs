//! Everything a user types: the value parsers (durations, sizes, rates,
//! numbers for `proto endian`, hex, host:port) and the whole clap command
//! line. Errors are fine; panics (overflow, slicing) are bugs.
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = proto::units::parse_duration(text);
    let _ = proto::units::parse_size(text);
    let _ = proto::units::parse_request_rate(text);
    let _ = proto::units::parse_bit_rate(text);
    let _ = proto::units::parse_percent(text);
    let _ = proto::units::number_and_unit(text);
    let _ = proto::cmd::codec::parse_number(text);
    let _ = proto::wire::hex::parse(text);
    let _ = proto::transport::Target::parse(text, 8081);
    // As a command line: NUL separates the arguments. Only parsing: no
    // command runs.
    let args = std::iter::once("proto").chain(text.split('\0'));
    let _ = proto::cli::Cli::try_parse_from(args);
});
