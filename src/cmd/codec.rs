//! `proto codec` and `proto endian`: a binary protocol, byte by byte.

use crate::output::bytes::{annotate, endian_view, render_dump, render_endian, render_error};
use crate::wire::{frame, hex, Frame, FrameType};
use anyhow::{bail, Context};
use std::io::Read;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum CodecCommand {
    /// Build a frame from its fields and show every byte with its meaning.
    ///
    /// Shows how a binary protocol lays out a message: a fixed header of
    /// big-endian integers, then the payload (spec: protocols/frame.md).
    Encode(EncodeArgs),
    /// Decode a frame from hex and show its fields, or exactly what is wrong.
    ///
    /// Reads hex from the argument or from stdin (spaces, colons and 0x are fine).
    Decode(DecodeArgs),
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  proto codec encode --id 42 --timestamp 1000000000 hello")]
pub struct EncodeArgs {
    /// The payload, as text.
    #[arg(conflicts_with = "payload_hex", default_value = "")]
    pub payload: String,
    /// The payload as hex bytes instead of text.
    #[arg(long, value_name = "HEX")]
    pub payload_hex: Option<String>,
    /// Frame type: request, response or error.
    #[arg(long = "type", default_value = "request")]
    pub frame_type: String,
    /// Message id (u32).
    #[arg(long, default_value_t = 1)]
    pub id: u32,
    /// Timestamp (u64; clients put their send time in nanoseconds here).
    #[arg(long, default_value_t = 0)]
    pub timestamp: u64,
    /// Print JSON (fields and hex) instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  proto codec decode 'F8 11 0000 0000002A 00000005 000000003B9ACA00 68656C6C6F'\n  proto codec encode hi | tail -1 | proto codec decode"
)]
pub struct DecodeArgs {
    /// The frame as hex; read from stdin when absent.
    pub hex: Option<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  proto endian 8081          the echo port as it appears in a TCP header\n  proto endian 0xDEADBEEF\n  proto endian -2 --bits 16   two's complement: 0xFFFE"
)]
pub struct EndianArgs {
    /// The number: decimal, 0x hex or 0b binary; negative numbers use two's complement.
    #[arg(allow_negative_numbers = true)]
    pub number: String,
    /// Integer width: 8, 16, 32 or 64. Default: the smallest of 16/32/64 that fits.
    #[arg(long, value_parser = ["8", "16", "32", "64"])]
    pub bits: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: CodecCommand) -> anyhow::Result<ExitCode> {
    match command {
        CodecCommand::Encode(args) => encode(args),
        CodecCommand::Decode(args) => decode(args),
    }
}

fn encode(args: EncodeArgs) -> anyhow::Result<ExitCode> {
    let frame_type = FrameType::from_name(&args.frame_type).with_context(|| {
        format!(
            "unknown frame type '{}': use request, response or error",
            args.frame_type
        )
    })?;
    let payload = match &args.payload_hex {
        Some(h) => hex::parse(h).map_err(|e| anyhow::anyhow!("--payload-hex: {e}"))?,
        None => args.payload.into_bytes(),
    };
    let frame = Frame {
        frame_type,
        id: args.id,
        timestamp: args.timestamp,
        payload: payload.into(),
    };
    let bytes = frame.to_bytes()?;
    let rows = annotate(&bytes, &frame);
    if args.json {
        let json = serde_json::json!({
            "type": frame.frame_type,
            "id": frame.id,
            "timestamp": frame.timestamp,
            "payload_len": frame.payload.len(),
            "hex": hex::spaced(&bytes).replace(' ', ""),
            "fields": rows,
        });
        outln!("{}", crate::output::json::pretty(&json)?);
    } else {
        outln!("{}", render_dump(&rows));
        outln!(
            "{} bytes; every integer big-endian. As one hex string:",
            bytes.len()
        );
        outln!("{}", hex::spaced(&bytes).replace(' ', ""));
    }
    Ok(ExitCode::SUCCESS)
}

fn decode(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let text = match args.hex {
        Some(h) => h,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading hex from stdin")?;
            s
        }
    };
    let bytes = hex::parse(&text).map_err(|e| anyhow::anyhow!("not valid hex: {e}"))?;
    if bytes.is_empty() {
        bail!("no bytes to decode: pass hex as an argument or on stdin");
    }
    match frame::decode_datagram(&bytes) {
        Ok(frame) => {
            let rows = annotate(&bytes, &frame);
            if args.json {
                let json = serde_json::json!({
                    "valid": true,
                    "type": frame.frame_type,
                    "id": frame.id,
                    "timestamp": frame.timestamp,
                    "payload_len": frame.payload.len(),
                    "payload": String::from_utf8_lossy(&frame.payload),
                    "fields": rows,
                });
                outln!("{}", crate::output::json::pretty(&json)?);
            } else {
                outln!("{}", render_dump(&rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            if args.json {
                let range = err.byte_range();
                let json = serde_json::json!({
                    "valid": false,
                    "error": err.kind(),
                    "message": err.to_string(),
                    "bytes": [range.start, range.end],
                });
                outln!("{}", crate::output::json::pretty(&json)?);
            } else {
                eprint!("{}", render_error(&bytes, &err));
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Parses decimal, `0x` hex, `0b` binary, with an optional minus sign.
/// Only one sign: `--5` is not a number (and must not overflow on
/// `--170141183460469231731687303715884105728`, i.e. −i128::MIN).
pub fn parse_number(text: &str) -> anyhow::Result<(i128, bool)> {
    let t = text.trim().replace('_', "");
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest.to_string()),
        None => (false, t.clone()),
    };
    let not_a_number = || format!("'{text}' is not a number: use e.g. 8081, 0x1F91, 0b1010 or -2");
    if digits.starts_with(['-', '+']) {
        bail!(not_a_number());
    }
    let magnitude = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u128::from_str_radix(h, 16)
    } else if let Some(b) = digits.strip_prefix("0b") {
        u128::from_str_radix(b, 2)
    } else {
        digits.parse()
    }
    .with_context(not_a_number)?;
    let too_large = || anyhow::anyhow!("{text} does not fit in 64 bits");
    let value = if negative {
        0i128
            .checked_sub_unsigned(magnitude)
            .ok_or_else(too_large)?
    } else {
        i128::try_from(magnitude).map_err(|_| too_large())?
    };
    Ok((value, negative))
}

pub fn endian(args: EndianArgs) -> anyhow::Result<ExitCode> {
    let (value, negative) = parse_number(&args.number)?;
    let bits: u32 = match args.bits.as_deref() {
        Some(b) => match b.trim().parse() {
            Ok(bits @ (8 | 16 | 32 | 64)) => bits,
            _ => bail!("--bits {b}: use 8, 16, 32 or 64"),
        },
        None => {
            let magnitude = value.unsigned_abs();
            let fits = |bits: u32| {
                if negative {
                    magnitude <= 1u128 << (bits - 1)
                } else {
                    magnitude < 1u128 << bits
                }
            };
            match [16, 32, 64].into_iter().find(|&b| fits(b)) {
                Some(b) => b,
                None => bail!("{} does not fit in 64 bits", args.number),
            }
        }
    };
    let (min, max) = if negative {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    };
    if value < min || value > max {
        bail!(
            "{} does not fit in {bits} bits ({min}..={max})",
            args.number
        );
    }
    // Two's complement: the low `bits` bits of the number.
    let raw = (value as u128 & ((1u128 << bits) - 1)) as u64;
    let view = endian_view(raw, Some(value.to_string()), bits);
    if args.json {
        outln!("{}", crate::output::json::pretty(&view)?);
    } else {
        out!("{}", render_endian(&view));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_number("8081").unwrap(), (8081, false));
        assert_eq!(parse_number("0x1F91").unwrap(), (8081, false));
        assert_eq!(parse_number("-2").unwrap(), (-2, true));
        assert!(parse_number("abc").is_err());
        assert_eq!(parse_number("-0x10").unwrap(), (-16, true));
    }

    #[test]
    fn extreme_numbers_are_errors_not_overflows() {
        // "--170…728" is −(−2^127): once a panic ("attempt to negate with overflow").
        for text in [
            "--170141183460469231731687303715884105728",
            "-+5",
            "--5",
            "340282366920938463463374607431768211456",
        ] {
            assert!(parse_number(text).is_err(), "{text}");
        }
        assert!(parse_number("-170141183460469231731687303715884105728").is_ok());
        let args = |number: &str, bits: Option<&str>| EndianArgs {
            number: number.into(),
            bits: bits.map(Into::into),
            json: true,
        };
        assert!(endian(args("-170141183460469231731687303715884105728", None)).is_err());
        assert!(endian(args("--170141183460469231731687303715884105728", None)).is_err());
        assert!(endian(args("5", Some("0"))).is_err());
        assert!(endian(args("5", Some("200"))).is_err());
        assert!(endian(args("-2", Some("8"))).is_ok());
    }
}
