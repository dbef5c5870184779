#!/usr/bin/env bash
# proto against the C reference in benches/reference (or BENCH_REF=dir):
#
#   server: proto serve   vs echo-ref   (both driven by the C client echo-rtt)
#   client: proto client  vs echo-rtt   (both driving the C server echo-ref)
#
#   bash benches/compare-ref.sh [REPS] [OUTDIR]      (defaults: 5, /tmp/proto-compare)
#
# Each scenario runs REPS times, alternating the two sides inside every
# repetition; the table shows medians and proto/reference ratios. "same-core"
# pins servers and clients to CPU 0 (removes ~80 µs of cross-CPU wake-up per
# round trip: the repeatable figure on a shared VM); 8 and 64 connections run
# unpinned, where both CPUs are needed. Needs cc, python3, taskset (util-linux).
set -u
REPS=${1:-5}
OUT=${2:-/tmp/proto-compare}
HERE=$(cd "$(dirname "$0")/.." && pwd)
REF=${BENCH_REF:-$HERE/benches/reference}
mkdir -p "$OUT"
RES="$OUT/results.jsonl"
: > "$RES"
cc -O2 -pthread -o "$OUT/echo-rtt" "$REF/echo-rtt.c" || exit 1
cc -O2 -pthread -o "$OUT/echo-ref" "$REF/echo-ref.c" || exit 1
(cd "$HERE" && cargo build --release --quiet) || exit 1
PROTO=${CARGO_TARGET_DIR:-$HERE/target}/release/proto

REF_PORT=9100
PROTO_PORT=9200
"$OUT/echo-ref" -p $REF_PORT -u & REF_PID=$!
"$PROTO" serve tcp --port $PROTO_PORT --quiet >/dev/null & PT=$!
"$PROTO" serve udp --port $PROTO_PORT --quiet >/dev/null & PU=$!
trap 'kill $REF_PID $PT $PU 2>/dev/null' EXIT
sleep 0.7

pin_servers() { for p in $REF_PID $PT $PU; do taskset -apc "$1" "$p" >/dev/null; done; }

# c_client LABEL PORT PIN -- echo-rtt args
c_client() {
  local label=$1 port=$2 pin=$3; shift 4
  local pre=(); [ "$pin" = same-core ] && pre=(taskset -c 0)
  timeout 120 "${pre[@]}" "$OUT/echo-rtt" -p "$port" -L "$label" "$@" >> "$RES" \
    || echo "WARN: $label failed" >&2
}
# proto_client LABEL PIN -- proto client args (always against echo-ref)
proto_client() {
  local label=$1 pin=$2; shift 3
  local pre=(); [ "$pin" = same-core ] && pre=(taskset -c 0)
  timeout 120 "${pre[@]}" "$PROTO" client "$@" --json \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); l=d["latency_us"]; print(json.dumps({"label":sys.argv[1],"p50_us":l["p50_us"],"p99_us":l["p99_us"],"p999_us":l["p99_9_us"],"msgs_per_s":d["requests_per_s"],"mb_per_s":d["mb_per_s"],"mismatches":d["mismatches"],"errors":d["failed"],"lost":d["lost"]}))' "$label" >> "$RES" \
    || echo "WARN: $label failed" >&2
}

for rep in $(seq 1 "$REPS"); do
  echo "rep $rep/$REPS" >&2
  pin_servers 0
  # scenario            who           args
  c_client "tcp64-c1|server|ref|$rep"     $REF_PORT   same-core -- -n 20000 -s 64
  c_client "tcp64-c1|server|proto|$rep"   $PROTO_PORT same-core -- -n 20000 -s 64
  c_client "tcp32k-c1|server|ref|$rep"    $REF_PORT   same-core -- -n 5000 -s 32768 -w 20
  c_client "tcp32k-c1|server|proto|$rep"  $PROTO_PORT same-core -- -n 5000 -s 32768 -w 20
  c_client "udp64-c1|server|ref|$rep"     $REF_PORT   same-core -- -u -n 20000 -s 64
  c_client "udp64-c1|server|proto|$rep"   $PROTO_PORT same-core -- -u -n 20000 -s 64
  c_client "tcp64-c1|client|ref|$rep"     $REF_PORT   same-core -- -n 20000 -s 64
  proto_client "tcp64-c1|client|proto|$rep" same-core -- tcp 127.0.0.1:$REF_PORT --count 20000 --size 64 --warmup 50ms
  c_client "tcp32k-c1|client|ref|$rep"    $REF_PORT   same-core -- -n 5000 -s 32768 -w 20
  proto_client "tcp32k-c1|client|proto|$rep" same-core -- tcp 127.0.0.1:$REF_PORT --count 5000 --size 32K --warmup 50ms
  c_client "udp64-c1|client|ref|$rep"     $REF_PORT   same-core -- -u -n 20000 -s 64
  proto_client "udp64-c1|client|proto|$rep" same-core -- udp 127.0.0.1:$REF_PORT --count 20000 --size 64 --warmup 50ms
  pin_servers 0,1
  c_client "tcp64-c8|server|ref|$rep"     $REF_PORT   unpinned -- -n 5000 -s 64 -c 8
  c_client "tcp64-c8|server|proto|$rep"   $PROTO_PORT unpinned -- -n 5000 -s 64 -c 8
  c_client "tcp64-c64|server|ref|$rep"    $REF_PORT   unpinned -- -n 2000 -s 64 -c 64 -w 20
  c_client "tcp64-c64|server|proto|$rep"  $PROTO_PORT unpinned -- -n 2000 -s 64 -c 64 -w 20
  c_client "tcp64-c8|client|ref|$rep"     $REF_PORT   unpinned -- -n 5000 -s 64 -c 8
  proto_client "tcp64-c8|client|proto|$rep" unpinned -- tcp 127.0.0.1:$REF_PORT --count 40000 -c 8 --size 64 --warmup 50ms
  c_client "tcp64-c64|client|ref|$rep"    $REF_PORT   unpinned -- -n 2000 -s 64 -c 64 -w 20
  proto_client "tcp64-c64|client|proto|$rep" unpinned -- tcp 127.0.0.1:$REF_PORT --count 128000 -c 64 --size 64 --warmup 50ms
done

python3 - "$RES" <<'EOF'
import json, statistics as st, sys
from collections import defaultdict
rows = defaultdict(list)
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        d = json.loads(line)
        scen, side, who, _ = d["label"].split("|")
        rows[(scen, side, who)].append(d)
med = lambda runs, k: st.median(r[k] for r in runs)
print("| scenario | side | p50 µs ref → proto | p99 µs ref → proto | msgs/s ref → proto | MB/s ref → proto | p50 ratio | p99 ratio | msgs/s ratio | MB/s ratio | bad |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for scen, side in sorted({(k[0], k[1]) for k in rows}, key=lambda k: (k[1], k[0])):
    ref, pro = rows.get((scen, side, "ref")), rows.get((scen, side, "proto"))
    if not ref or not pro:
        continue
    f = lambda k: (med(ref, k), med(pro, k))
    p50, p99, mps, mbs = f("p50_us"), f("p99_us"), f("msgs_per_s"), f("mb_per_s")
    bad = sum(r.get("mismatches", 0) + r.get("errors", 0) + r.get("lost", 0) for r in ref + pro)
    print(f"| {scen} | {side} | {p50[0]:.1f} → {p50[1]:.1f} | {p99[0]:.1f} → {p99[1]:.1f} | "
          f"{mps[0]:.0f} → {mps[1]:.0f} | {mbs[0]:.1f} → {mbs[1]:.1f} | {p50[1]/p50[0]:.2f} | "
          f"{p99[1]/p99[0]:.2f} | {mps[1]/mps[0]:.2f} | {mbs[1]/mbs[0]:.2f} | {bad} |")
EOF
