//! Link options shared by every subcommand that uses the lab
//! (`#[command(flatten)] link: LinkArgs`), turned into the lab's plain
//! [`LabConfig`]. The unit parsers live in [`crate::units`].

use crate::lab::model::{LinkConfig, LossModel};
use crate::lab::presets::Preset;
use crate::lab::LabConfig;
use crate::units::{parse_bit_rate, parse_duration, parse_percent};
use std::time::Duration;

/// Options describing the emulated link. Symmetric options apply to both
/// directions; `--up-*` (client→server) and `--down-*` (server→client)
/// override one direction.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LinkArgs {
    /// A named link: its delay, jitter, loss and rates, each of which an
    /// explicit option overrides (`--link 3g --rtt 100ms` is 3G with a
    /// 100 ms round trip). The source of each preset's figures:
    #[arg(long = "link", value_enum, value_name = "NAME", help_heading = "Link")]
    pub preset: Option<Preset>,
    /// Round-trip time added by the link (half in each direction), e.g. 329ms.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", conflicts_with = "delay", help_heading = "Link")]
    pub rtt: Option<Duration>,
    /// One-way delay in each direction, e.g. 50ms.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", help_heading = "Link")]
    pub delay: Option<Duration>,
    /// Delay varies uniformly by ± this much (packets stay in order).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", help_heading = "Link")]
    pub jitter: Option<Duration>,
    /// Packet loss per direction, e.g. 2% (independent unless --loss-burst).
    #[arg(long, value_parser = parse_percent, value_name = "PERCENT", help_heading = "Link")]
    pub loss: Option<f64>,
    /// Lose packets in bursts of this mean length (Gilbert-Elliott model),
    /// keeping the overall --loss rate, e.g. --loss 2% --loss-burst 4.
    #[arg(long, value_name = "PACKETS", help_heading = "Link")]
    pub loss_burst: Option<f64>,
    /// Full Gilbert-Elliott loss model, both directions:
    /// "P(good→bad),P(bad→good),loss in bad[,loss in good]", e.g. 1%,25%,80%,0.1%.
    #[arg(long, value_parser = parse_gilbert_elliott, value_name = "P,R,H[,K]",
          conflicts_with_all = ["loss", "loss_burst"], help_heading = "Link")]
    pub loss_ge: Option<LossModel>,
    /// Bottleneck rate, e.g. 10mbit, 1.5gbit, 500kbit (bits per second).
    #[arg(long, value_parser = parse_bit_rate, value_name = "BIT/S", help_heading = "Link")]
    pub rate: Option<u64>,
    /// Bottleneck buffer in packets (drop-tail: arrivals to a full queue are
    /// dropped). Only used with --rate.
    #[arg(
        long,
        value_name = "PACKETS",
        default_value_t = 100,
        help_heading = "Link"
    )]
    pub queue: usize,
    /// Share of packets held back so later packets overtake them, e.g. 1%.
    #[arg(long, value_parser = parse_percent, value_name = "PERCENT", help_heading = "Link")]
    pub reorder: Option<f64>,
    /// How long a reordered packet is held back.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "10ms", help_heading = "Link")]
    pub reorder_delay: Duration,
    /// Share of packets delivered twice, e.g. 1%.
    #[arg(long, value_parser = parse_percent, value_name = "PERCENT", help_heading = "Link")]
    pub duplicate: Option<f64>,
    /// Random seed: the same seed gives the same losses, delays and
    /// duplicates for the same traffic.
    #[arg(long, default_value_t = 1, help_heading = "Link")]
    pub seed: u64,
    /// MTU of the link (largest IP packet), 68..=65535.
    #[arg(long, default_value_t = 1500, help_heading = "Link")]
    pub mtu: u32,
    /// Drop the Nth data packet (≥ 200 bytes) in each direction, every run
    /// the same: a reproducible loss. Repeat or list: --drop-nth 300,600.
    #[arg(long, value_name = "N", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..), help_heading = "Link")]
    pub drop_nth: Vec<u64>,
    /// The hosts' socket-buffer limits: `sized` (room for twice the link's
    /// bandwidth-delay product, the default), `kernel` (the kernel's
    /// defaults, to see a window limit a long fat link), or a size like 2M
    /// (exactly this maximum for TCP's send and receive buffers).
    #[arg(long, value_parser = crate::lab::buffers::parse_host_buffers, value_name = "sized|kernel|SIZE", default_value = "sized", help_heading = "Link")]
    pub host_buffers: crate::lab::buffers::HostBuffers,

    /// One-way delay client→server (overrides --rtt/--delay for that direction).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", help_heading = "Asymmetric link (up = client→server, down = server→client)")]
    pub up_delay: Option<Duration>,
    /// One-way delay server→client.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", help_heading = "Asymmetric link (up = client→server, down = server→client)")]
    pub down_delay: Option<Duration>,
    /// Jitter client→server.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", help_heading = "Asymmetric link (up = client→server, down = server→client)")]
    pub up_jitter: Option<Duration>,
    /// Jitter server→client.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", help_heading = "Asymmetric link (up = client→server, down = server→client)")]
    pub down_jitter: Option<Duration>,
    /// Loss client→server.
    #[arg(long, value_parser = parse_percent, value_name = "PERCENT", help_heading = "Asymmetric link (up = client→server, down = server→client)")]
    pub up_loss: Option<f64>,
    /// Loss server→client.
    #[arg(long, value_parser = parse_percent, value_name = "PERCENT", help_heading = "Asymmetric link (up = client→server, down = server→client)")]
    pub down_loss: Option<f64>,
    /// Uplink rate, e.g. --up-rate 10mbit for a slow upload.
    #[arg(long, value_parser = parse_bit_rate, value_name = "BIT/S", help_heading = "Asymmetric link (up = client→server, down = server→client)")]
    pub up_rate: Option<u64>,
    /// Downlink rate (server→client).
    #[arg(long, value_parser = parse_bit_rate, value_name = "BIT/S", help_heading = "Asymmetric link (up = client→server, down = server→client)")]
    pub down_rate: Option<u64>,
    /// Bottleneck buffer client→server.
    #[arg(
        long,
        value_name = "PACKETS",
        help_heading = "Asymmetric link (up = client→server, down = server→client)"
    )]
    pub up_queue: Option<usize>,
    /// Bottleneck buffer server→client.
    #[arg(
        long,
        value_name = "PACKETS",
        help_heading = "Asymmetric link (up = client→server, down = server→client)"
    )]
    pub down_queue: Option<usize>,
    /// Reordering client→server.
    #[arg(long, value_parser = parse_percent, value_name = "PERCENT", help_heading = "Asymmetric link (up = client→server, down = server→client)")]
    pub up_reorder: Option<f64>,
    /// Reordering server→client.
    #[arg(long, value_parser = parse_percent, value_name = "PERCENT", help_heading = "Asymmetric link (up = client→server, down = server→client)")]
    pub down_reorder: Option<f64>,
    /// Duplication client→server.
    #[arg(long, value_parser = parse_percent, value_name = "PERCENT", help_heading = "Asymmetric link (up = client→server, down = server→client)")]
    pub up_duplicate: Option<f64>,
    /// Duplication server→client.
    #[arg(long, value_parser = parse_percent, value_name = "PERCENT", help_heading = "Asymmetric link (up = client→server, down = server→client)")]
    pub down_duplicate: Option<f64>,
}

/// Per-direction overrides, to apply the same code to up and down.
struct Overrides {
    delay: Option<Duration>,
    jitter: Option<Duration>,
    loss: Option<f64>,
    rate: Option<u64>,
    queue: Option<usize>,
    reorder: Option<f64>,
    duplicate: Option<f64>,
}

impl LinkArgs {
    /// True when any option changes the link from "no link at all" (the
    /// user asked for an emulated link explicitly: never measure loopback
    /// instead). Settings that do not parse count as asking.
    pub fn asks_for_link(&self) -> bool {
        self.to_config()
            .map_or(true, |config| config != LabConfig::default())
    }

    /// These options with the `--link` preset's values filled in where no
    /// explicit option gives them (an explicit option always wins).
    pub fn with_preset(&self) -> LinkArgs {
        let mut args = self.clone();
        let Some(preset) = args.preset.take() else {
            return args;
        };
        if args.rtt.is_none() && args.delay.is_none() {
            args.rtt = Some(preset.rtt);
        }
        if args.jitter.is_none() && !preset.jitter.is_zero() {
            args.jitter = Some(preset.jitter);
        }
        if args.loss.is_none() && args.loss_ge.is_none() && preset.loss > 0.0 {
            args.loss = Some(preset.loss);
            if args.loss_burst.is_none() {
                args.loss_burst = preset.loss_burst;
            }
        }
        // --rate sets both directions, so it overrides both preset rates.
        if args.rate.is_none() {
            args.up_rate = args.up_rate.or(preset.up_rate);
            args.down_rate = args.down_rate.or(preset.down_rate);
        }
        args
    }

    /// Turn the options into a lab configuration (pcap unset). Settings
    /// that are valid but probably not meant (`--rate 10` is 10 bit/s,
    /// jitter above the delay) are reported on stderr, once per process.
    pub fn to_config(&self) -> anyhow::Result<LabConfig> {
        let config = self.with_preset().build_config()?;
        for link in [&config.client_to_server, &config.server_to_client] {
            for warning in link.warnings() {
                warn_once(&warning);
            }
        }
        Ok(config)
    }

    fn build_config(&self) -> anyhow::Result<LabConfig> {
        let one_way = match (self.rtt, self.delay) {
            (Some(rtt), _) => rtt / 2,
            (None, Some(d)) => d,
            (None, None) => Duration::ZERO,
        };
        if let Some(b) = self.loss_burst {
            anyhow::ensure!(
                b >= 1.0,
                "--loss-burst is a mean burst length in packets and must be at least 1"
            );
        }
        let up = Overrides {
            delay: self.up_delay,
            jitter: self.up_jitter,
            loss: self.up_loss,
            rate: self.up_rate,
            queue: self.up_queue,
            reorder: self.up_reorder,
            duplicate: self.up_duplicate,
        };
        let down = Overrides {
            delay: self.down_delay,
            jitter: self.down_jitter,
            loss: self.down_loss,
            rate: self.down_rate,
            queue: self.down_queue,
            reorder: self.down_reorder,
            duplicate: self.down_duplicate,
        };
        let build = |o: Overrides| -> anyhow::Result<LinkConfig> {
            let loss = o.loss.or(self.loss).unwrap_or(0.0);
            let link = LinkConfig {
                delay: o.delay.unwrap_or(one_way),
                jitter: o.jitter.or(self.jitter).unwrap_or_default(),
                loss: match (loss, self.loss_burst) {
                    (_, _) if o.loss.is_none() && self.loss_ge.is_some() => {
                        self.loss_ge.clone().unwrap_or_default()
                    }
                    (l, _) if l <= 0.0 => LossModel::None,
                    (l, Some(burst)) => LossModel::bursty(l, burst),
                    (l, None) => LossModel::Random { p: l },
                },
                rate_bps: o.rate.or(self.rate),
                queue_packets: o.queue.unwrap_or(self.queue),
                reorder: o.reorder.or(self.reorder).unwrap_or(0.0),
                reorder_delay: self.reorder_delay,
                duplicate: o.duplicate.or(self.duplicate).unwrap_or(0.0),
                drop_data_packets: self.drop_nth.clone(),
            };
            link.validate()?;
            Ok(link)
        };
        Ok(LabConfig {
            client_to_server: build(up)?,
            server_to_client: build(down)?,
            seed: self.seed,
            mtu: self.mtu,
            pcap: None,
            host_buffers: self.host_buffers,
            tap: None,
        })
    }
}

/// Prints `warning` on stderr unless this process printed it already (a
/// command may turn its options into a configuration more than once).
fn warn_once(warning: &str) {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SHOWN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let shown = SHOWN.get_or_init(Mutex::default);
    if let Ok(mut shown) = shown.lock() {
        if shown.insert(warning.to_string()) {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "proto: warning: {warning}");
        }
    }
}

/// "1%,25%,80%[,0.1%]" → Gilbert-Elliott with P(good→bad), P(bad→good),
/// loss in bad, loss in good (0 if omitted).
pub fn parse_gilbert_elliott(s: &str) -> Result<LossModel, String> {
    let parts: Vec<f64> = s.split(',').map(parse_percent).collect::<Result<_, _>>()?;
    let (p, r, h, k) = match parts[..] {
        [p, r, h] => (p, r, h, 0.0),
        [p, r, h, k] => (p, r, h, k),
        _ => return Err(format!("{s:?}: expected 3 or 4 percentages: P(good→bad),P(bad→good),loss in bad[,loss in good]")),
    };
    if r == 0.0 && p > 0.0 {
        return Err(format!(
            "{s:?}: with P(bad→good) = 0 the link never recovers"
        ));
    }
    Ok(LossModel::GilbertElliott {
        p_good_to_bad: p,
        p_bad_to_good: r,
        loss_in_good: k,
        loss_in_bad: h,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        link: LinkArgs,
    }

    fn config(args: &[&str]) -> LabConfig {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap();
        cli.link.to_config().unwrap()
    }

    #[test]
    fn rtt_is_split_between_directions() {
        let c = config(&["--rtt", "100ms"]);
        assert_eq!(c.client_to_server.delay, Duration::from_millis(50));
        assert_eq!(c.server_to_client.delay, Duration::from_millis(50));
        assert_eq!(c.mtu, 1500);
    }

    #[test]
    fn asymmetric_overrides() {
        let c = config(&[
            "--rtt",
            "100ms",
            "--down-rate",
            "10mbit",
            "--up-delay",
            "10ms",
            "--loss",
            "1%",
        ]);
        assert_eq!(c.client_to_server.delay, Duration::from_millis(10));
        assert_eq!(c.server_to_client.delay, Duration::from_millis(50));
        assert_eq!(c.server_to_client.rate_bps, Some(10_000_000));
        assert_eq!(c.client_to_server.rate_bps, None);
        assert_eq!(c.client_to_server.loss, LossModel::Random { p: 0.01 });
    }

    #[test]
    fn burst_loss_builds_gilbert_elliott() {
        let c = config(&["--loss", "2%", "--loss-burst", "4"]);
        assert!(matches!(
            c.client_to_server.loss,
            LossModel::GilbertElliott { .. }
        ));
        assert!(crate::output::link::describe(&c.client_to_server).contains("bursts of 4.0"));
    }

    #[test]
    fn full_gilbert_elliott() {
        let c = config(&["--loss-ge", "1%,25%,80%"]);
        assert_eq!(
            c.server_to_client.loss,
            LossModel::GilbertElliott {
                p_good_to_bad: 0.01,
                p_bad_to_good: 0.25,
                loss_in_good: 0.0,
                loss_in_bad: 0.8
            }
        );
        assert!(parse_gilbert_elliott("1%,2%").is_err());
        assert!(Cli::try_parse_from(["t", "--loss", "1%", "--loss-ge", "1,2,3"]).is_err());
    }

    #[test]
    fn presets_fill_in_what_is_not_given() {
        let c = config(&["--link", "3g"]);
        assert_eq!(c.client_to_server.delay, Duration::from_millis(150));
        assert_eq!(c.client_to_server.rate_bps, Some(768_000));
        assert_eq!(c.server_to_client.rate_bps, Some(1_600_000));
        // Explicit options win, one value at a time.
        let c = config(&["--link", "3g", "--rtt", "100ms", "--down-rate", "2mbit"]);
        assert_eq!(c.server_to_client.delay, Duration::from_millis(50));
        assert_eq!(c.server_to_client.rate_bps, Some(2_000_000));
        assert_eq!(c.client_to_server.rate_bps, Some(768_000));
        let c = config(&["--link", "dsl", "--rate", "10mbit"]);
        assert_eq!(c.client_to_server.rate_bps, Some(10_000_000));
        assert_eq!(c.server_to_client.rate_bps, Some(10_000_000));
        let c = config(&["--link", "wifi", "--delay", "1ms"]);
        assert_eq!(c.client_to_server.delay, Duration::from_millis(1));
        assert_eq!(c.client_to_server.jitter, Duration::from_millis(5));
        assert!(matches!(
            c.client_to_server.loss,
            LossModel::GilbertElliott { .. }
        ));
        let c = config(&["--link", "wifi", "--loss", "0%"]);
        assert_eq!(c.client_to_server.loss, LossModel::None);
        // Every preset builds a valid link and counts as asking for one.
        for p in &crate::lab::presets::PRESETS {
            let cli = Cli::try_parse_from(["t", "--link", p.name]).unwrap();
            let c = cli.link.to_config().unwrap();
            assert_eq!(
                c.client_to_server.delay + c.server_to_client.delay,
                p.rtt,
                "{}",
                p.name
            );
            assert!(cli.link.asks_for_link());
        }
        assert!(Cli::try_parse_from(["t", "--link", "moon"]).is_err());
    }

    #[test]
    fn suspicious_settings_warn() {
        let c = config(&["--rate", "10", "--delay", "1ms", "--jitter", "5ms"]);
        let warnings = c.client_to_server.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("10 bit/s") && warnings[0].contains("10mbit"));
        assert!(warnings[1].contains("jitter ±5ms is larger than the delay 1ms"));
        assert!(
            config(&["--rate", "1mbit", "--delay", "10ms", "--jitter", "5ms"])
                .client_to_server
                .warnings()
                .is_empty()
        );
    }

    #[test]
    fn invalid_settings_are_typed_errors() {
        let cli = Cli::try_parse_from(["t", "--queue", "0"]).unwrap();
        let err = cli.link.to_config().unwrap_err();
        assert_eq!(
            err.downcast_ref::<crate::lab::LinkConfigError>(),
            Some(&crate::lab::LinkConfigError::ZeroQueue)
        );
    }

    #[test]
    fn rtt_and_delay_conflict() {
        assert!(Cli::try_parse_from(["t", "--rtt", "1ms", "--delay", "1ms"]).is_err());
    }
}
