#!/usr/bin/env bash
# Does the lab's forwarder keep up with a long fat link (issue 17)? One bulk
# TCP transfer (CUBIC, Linux's usual default; TCP_CC=bbr to compare) across the lab at
# 1 Gbit/s for each RTT, with the hosts' buffers sized to the link and a
# one-BDP drop-tail queue; prints the goodput over the whole transfer and
# after slow start, and what else limited it (losses before the link because
# the forwarder fell behind, or a window).
#
#   bash benches/long-fat-links.sh [RTTS] [SECONDS]   (defaults: "10ms 100ms 300ms", 20)
#   MTU=9000 bash benches/long-fat-links.sh            (jumbo frames: a sixth of the packets)
#
# As root or as an ordinary user (proto goes rootless by itself). Needs
# python3. Results are this machine's: the forwarder copies every packet
# through two TUN devices in one process, so CPU (and other work on the
# machine) sets its ceiling; "host drops" counts packets the client's TUN
# queue dropped because the forwarder fell behind.
set -euo pipefail
RTTS=${1:-10ms 100ms 300ms}
SECONDS_EACH=${2:-20}
MTU=${MTU:-1500}
TCP_CC=${TCP_CC:-cubic}
HERE=$(cd "$(dirname "$0")/.." && pwd)
(cd "$HERE" && cargo build --release --quiet)
PROTO=${CARGO_TARGET_DIR:-$HERE/target}/release/proto

echo "MTU $MTU, congestion control $TCP_CC; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-9s %-15s %-19s %-10s %-11s %s\n' RTT rate goodput "after slow start" retrans "host drops" "window-limited"
for rtt in $RTTS; do
  "$PROTO" transfer tcp --rtt "$rtt" --rate 1gbit --mtu "$MTU" --cc "$TCP_CC" --queue-bdp 1 --duration "${SECONDS_EACH}s" \
    --sample-every 10ms --json 2>/dev/null |
    python3 -c '
import json, sys
r = json.load(sys.stdin)
run = r["run"]
pct = lambda x: "—" if x is None else "%.1f %%" % (100 * x)
mbit = lambda b: "—" if b is None else "%.0f Mbit/s" % (b / 1e6)
print("%-6s %-9s %-15s %-19s %-10s %-11s %s" % (
    sys.argv[1], "1 Gbit/s",
    "%s %s" % (mbit(r["goodput_bps"]), pct(r["goodput_share"])),
    "%s %s" % (mbit(r["steady_goodput_bps"]), pct(r["steady_share"])),
    "%.1f MB" % (r["retransmitted_bytes"] / 1e6),
    run["host_drops"],
    "yes" if r["window"]["limited"] else "no"))
' "$rtt"
done
