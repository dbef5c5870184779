//! How the library's plain enums appear on the command line. The library
//! knows nothing of clap; each enum offers its ids (`ALL`, `id`/`name`) and
//! one-line summaries, and this file turns them into clap's possible values.

use crate::lab::presets::{Preset, PRESETS};
use crate::measure::handshake::Variant;
use crate::transport::tls::TlsVersion;
use crate::transport::Transport;
use clap::builder::PossibleValue;
use clap::ValueEnum;

impl ValueEnum for Transport {
    fn value_variants<'a>() -> &'a [Self] {
        &Transport::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(self.summary()))
    }
}

impl ValueEnum for TlsVersion {
    fn value_variants<'a>() -> &'a [Self] {
        &TlsVersion::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.id()).help(self.summary()))
    }
}

impl ValueEnum for Variant {
    fn value_variants<'a>() -> &'a [Self] {
        &Variant::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.id()))
    }
}

impl ValueEnum for Preset {
    fn value_variants<'a>() -> &'a [Self] {
        &PRESETS
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name).help(self.source))
    }
}

impl ValueEnum for crate::output::plot::LatencyScale {
    fn value_variants<'a>() -> &'a [Self] {
        use crate::output::plot::LatencyScale;
        &[LatencyScale::Linear, LatencyScale::Log]
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        use crate::output::plot::LatencyScale;
        Some(match self {
            LatencyScale::Linear => PossibleValue::new("linear").help("from 0, one unit"),
            LatencyScale::Log => PossibleValue::new("log").help("1-2-5 ticks per decade"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_parses_back_to_itself() {
        for t in Transport::ALL {
            assert_eq!(Transport::from_str(t.name(), false), Ok(t));
        }
        for v in TlsVersion::ALL {
            assert_eq!(TlsVersion::from_str(v.id(), false), Ok(v));
        }
        for v in Variant::ALL {
            assert_eq!(Variant::from_str(v.id(), false), Ok(v));
        }
        for p in &PRESETS {
            assert_eq!(Preset::from_str(p.name, false).as_ref(), Ok(p));
        }
    }
}
