#!/usr/bin/env bash
# bench/load/load.sh: pixseek serve under load, on 127.0.0.1 only.
#
# For each mode (embedded: SQLite + in-process cache; server: a private
# MariaDB + Redis started here) it builds a database from a folder of images,
# starts `pixseek serve`, and drives searches with wrk (CONNS connections for
# DURATION seconds) while a second client uploads one new image a second.
# Two runs per mode: cache "cold" (every query a different image that is not
# in the database) and "warm" (the same query again and again); then the same
# two with LATENCY_CONNS connections (default 1) for LATENCY_DURATION seconds:
# below saturation, latency is the request's own, not queueing behind the
# other clients. Prints one JSON object per run:
#   {"mode","cache","connections","duration_s","rps","p50_ms","p90_ms","p99_ms",
#    "max_ms","errors","non_2xx","uploads","upload_errors","rss_before_kb",
#    "rss_after_kb","forward_passes","embedded_images"}
# and last a {"forward_ms_per_image": ...} row: the model's forward time, to
# compare the cold p50 with.
#
# Needs: wrk (Debian wrk), and for server mode mariadb-server and
# redis-server. Usage (from the repository root, after `make build`):
#   bench/load/load.sh [--duration 60] [--conns 16] [--modes "embedded server"]
#                      [--latency-conns 1] [--latency-duration 20]
#                      [--db-images DIR] [--query-images DIR...]
# (--latency-conns 0 skips the latency runs.)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
PIXSEEK=${PIXSEEK:-$root/build/src/cli/pixseek}
MODEL=${MODEL:-$root/../shared/models/mobilenetv2-12-int8/mobilenetv2-12-int8.onnx}
DURATION=60
CONNS=16
LATENCY_CONNS=1
LATENCY_DURATION=20
MODES="embedded server"
DB_IMAGES=$root/../shared/data/pacs/photo
QUERY_IMAGES=("$root/../shared/data/pacs/art_painting" "$root/../shared/data/pacs/cartoon"
              "$root/../shared/data/pacs/sketch")
while (($#)); do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --latency-conns) LATENCY_CONNS=$2; shift 2 ;;
    --latency-duration) LATENCY_DURATION=$2; shift 2 ;;
    --db-images) DB_IMAGES=$2; shift 2 ;;
    --query-images) QUERY_IMAGES=("$2"); shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for tool in wrk curl; do
  command -v $tool >/dev/null || { echo "load.sh needs $tool (apt-get install $tool)" >&2; exit 2; }
done
[[ -x $PIXSEEK ]] || { echo "no pixseek binary at $PIXSEEK (make build)" >&2; exit 2; }
[[ -f $MODEL ]] || { echo "no model at $MODEL" >&2; exit 2; }

work=$(mktemp -d /tmp/pixseek-load.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/VmRSS/ {print $2}' /proc/"$1"/status; }
log() { echo "load.sh: $*" >&2; }
# Forward passes and images embedded so far (dynamic batching), from /metrics.
embed_counts() {
  curl -s "http://127.0.0.1:$1/metrics" | awk '
    $1 == "pixseek_embed_batches_total" {b = $2}
    $1 == "pixseek_embed_batched_images_total" {i = $2}
    END {printf "%d %d\n", b, i}'
}

export PIXSEEK_HOME=$work/home
"$PIXSEEK" model import "$MODEL" >/dev/null
# Disjoint image lists, so that no cold query was seen before in any run:
# the uploader takes the last 500, the CONNS runs the first half of the
# rest, the latency runs the second half.
find "${QUERY_IMAGES[@]}" -type f | sort > "$work/all.txt"
total=$(wc -l < "$work/all.txt")
((total >= 1000)) || { echo "need at least 1,000 query images, found $total" >&2; exit 2; }
tail -n 500 "$work/all.txt" > "$work/upload.txt"
half=$(((total - 500) / 2))
head -n "$half" "$work/all.txt" > "$work/cold-load.txt"
sed -n "$((half + 1)),$((total - 500))p" "$work/all.txt" > "$work/cold-latency.txt"
log "$total query images: $half for the loaded runs, $((total - 500 - half)) for the latency runs, 500 to upload"

start_servers() {
  local maria_port redis_port
  maria_port=$(free_port)
  redis_port=$(free_port)
  mkdir -p "$work/maria" "$work/redis"
  mariadb-install-db --no-defaults --datadir="$work/maria/data" --auth-root-authentication-method=normal \
    --skip-test-db >/dev/null 2>&1
  mariadbd --no-defaults --user="$(id -un)" --datadir="$work/maria/data" --port="$maria_port" --bind-address=127.0.0.1 \
    --socket="$work/maria/sock" --skip-log-bin --innodb-buffer-pool-size=64M \
    --log-error="$work/maria/err.log" --pid-file="$work/maria/pid" &
  pids+=($!)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work/redis" \
    --daemonize no >"$work/redis/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    mariadb --no-defaults -uroot --socket="$work/maria/sock" -e 'select 1' >/dev/null 2>&1 && break
    sleep 0.2
  done
  mariadb --no-defaults -uroot --socket="$work/maria/sock" -e \
    "CREATE DATABASE pixseek; CREATE USER 'pixseek'@'127.0.0.1' IDENTIFIED BY 'load-test';
     GRANT ALL ON pixseek.* TO 'pixseek'@'127.0.0.1';"
  export PIXSEEK_METADATA_URL="mysql://pixseek:load-test@127.0.0.1:$maria_port/pixseek"
  export PIXSEEK_CACHE_URL="redis://127.0.0.1:$redis_port/0"
}

# Uploads one new image a second until the file $1 exists; counts answers.
uploader() {
  local port=$1 stop=$2 out=$3 ok=0 bad=0 i=0
  mapfile -t files < "$work/upload.txt"
  while [[ ! -e $stop ]]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -F "image=@${files[i % ${#files[@]}]}" \
      "http://127.0.0.1:$port/api/v1/images" || echo 000)
    # 201 new, 200 already stored: both are successes.
    if [[ $code == 201 || $code == 200 ]]; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
    i=$((i + 1))
    sleep 1
  done
  echo "$ok $bad" > "$out"
}

for mode in $MODES; do
  unset PIXSEEK_METADATA_URL PIXSEEK_CACHE_URL
  [[ $mode == server ]] && start_servers
  db=$work/db-$mode
  log "$mode: building a database from $DB_IMAGES"
  "$PIXSEEK" build "$DB_IMAGES" --db "$db" --json >/dev/null
  port=$(free_port)
  # httplib keeps a worker per kept-alive connection: one per client, and spare.
  "$PIXSEEK" serve --db "$db" --port "$port" --quiet --threads $((CONNS + 4)) --max-concurrent 256 \
    2>"$work/serve-$mode.log" &
  serve_pid=$!
  pids+=($serve_pid)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
  runs=("$CONNS:$DURATION:cold:load" "$CONNS:$DURATION:warm:load")
  if ((LATENCY_CONNS > 0)); then
    runs+=("$LATENCY_CONNS:$LATENCY_DURATION:cold:latency" "$LATENCY_CONNS:$LATENCY_DURATION:warm:latency")
  fi
  for run in "${runs[@]}"; do
    IFS=: read -r conns duration cache list <<< "$run"
    threads=$((conns < 2 ? conns : 2))  # wrk needs a connection per thread
    rss_before=$(rss_kb $serve_pid)
    read -r passes_before images_before < <(embed_counts "$port")
    rm -f "$work/stop"
    uploader "$port" "$work/stop" "$work/uploads" &
    up_pid=$!
    row=$(QUERY_LIST=$work/cold-$list.txt QUERY_MODE=$([[ $cache == warm ]] && echo same || echo distinct) \
      WRK_THREADS=$threads wrk -t"$threads" -c"$conns" -d"${duration}s" --timeout 30s \
      -s "$root/bench/load/search.lua" "http://127.0.0.1:$port" | tail -n 1)
    touch "$work/stop"
    wait $up_pid
    read -r up_ok up_bad < "$work/uploads"
    rss_after=$(rss_kb $serve_pid)
    kill -0 $serve_pid || { echo "pixseek serve died" >&2; exit 1; }
    read -r passes_after images_after < <(embed_counts "$port")
    batching="\"forward_passes\":$((passes_after - passes_before)),\"embedded_images\":$((images_after - images_before))"
    echo "{\"mode\":\"$mode\",\"cache\":\"$cache\",\"connections\":$conns,${row#\{}" |
      sed "s/}\$/,\"uploads\":$up_ok,\"upload_errors\":$up_bad,\"rss_before_kb\":$rss_before,\"rss_after_kb\":$rss_after,$batching}/"
  done
  kill $serve_pid; wait $serve_pid 2>/dev/null || true
done

# The model's forward time, for the cold-cache target (an uncached search's
# p50 within 10 ms of it): `pixseek bench embed`'s forward-only rate.
"$PIXSEEK" bench embed --model mobilenetv2 --images "$DB_IMAGES" --limit 200 --threads 2 \
  2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    row = json.loads(line)
    if row.get("pipeline") == "pixseek" and row.get("stage") == "forward":
        print(json.dumps({"forward_ms_per_image": round(1000 / row["images_per_s"], 2)}))
' || log "bench embed is not available; no forward time"
