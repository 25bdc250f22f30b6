#!/usr/bin/env bash
# bench/load/load.sh: pixseek serve under load, on 127.0.0.1 only.
#
# For each mode (embedded: SQLite + in-process cache; server: a private
# MariaDB + Redis started here; milvus: the same plus the vectors in
# pixseek_milvus_test_server) it builds a database from a folder of images,
# starts NODES `pixseek serve` processes on it (more than one only for the
# milvus mode: stateless nodes sharing the stores), and drives searches with
# wrk (CONNS connections for DURATION seconds in all, split evenly over the
# nodes, one wrk per node) while a second client uploads one new image a
# second, to each node in turn.
# Two runs per mode: cache "cold" (every query a different image that is not
# in the database) and "warm" (the same query again and again); then the same
# two with LATENCY_CONNS connections (default 1) for LATENCY_DURATION seconds:
# below saturation, latency is the request's own, not queueing behind the
# other clients. Prints one JSON object per run:
#   {"mode","nodes","node","cache","connections","duration_s","rps","p50_ms",
#    "p90_ms","p99_ms","max_ms","errors","non_2xx","uploads","upload_errors",
#    "upload_p50_ms","upload_p99_ms","rss_before_kb","rss_after_kb",
#    "forward_passes","embedded_images"}
# ("node" counts from 0; with several nodes each run adds a row with
# "node":"all": summed requests and errors, and the worst node's latencies.)
# and last a {"forward_ms_per_image": ...} row: the model's forward time, to
# compare the cold p50 with.
#
# Needs: wrk (Debian wrk), and for server mode mariadb-server and
# redis-server. Usage (from the repository root, after `make build`):
#   bench/load/load.sh [--duration 60] [--conns 16] [--modes "embedded server"]
#                      [--latency-conns 1] [--latency-duration 20]
#                      [--db-images DIR] [--query-images DIR...] [--nodes N]
#   e.g. two nodes against one: --modes milvus --nodes 2, then --nodes 1
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
NODES=1
MILVUS_SERVER=${MILVUS_SERVER:-$root/build/tests/pixseek_milvus_test_server}
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
    --nodes) NODES=$2; shift 2 ;;
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

# The vectors in the Milvus test server (CI's stand-in for Milvus: it
# speaks Milvus's REST API v2 over pixseek's exact flat index).
start_milvus() {
  [[ -x $MILVUS_SERVER ]] || { echo "no Milvus test server at $MILVUS_SERVER (make build)" >&2; exit 2; }
  local port
  port=$(free_port)
  "$MILVUS_SERVER" --dir "$work/milvus" --port "$port" >"$work/milvus.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q listening "$work/milvus.log" && break; sleep 0.1; done
  export PIXSEEK_VECTOR_URL="milvus://127.0.0.1:$port/load_photos"
}

# Uploads one new image a second, to each of the ports $1 in turn, until the
# file $2 exists; writes "ok bad p50_ms p99_ms" to $3.
uploader() {
  local -a ports=($1)
  local stop=$2 out=$3 ok=0 bad=0 i=0
  mapfile -t files < "$work/upload.txt"
  : > "$out.times"
  while [[ ! -e $stop ]]; do
    read -r code secs < <(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' \
      -F "image=@${files[i % ${#files[@]}]}" \
      "http://127.0.0.1:${ports[i % ${#ports[@]}]}/api/v1/images" || echo 000 0)
    # 201 new, 200 already stored: both are successes.
    if [[ $code == 201 || $code == 200 ]]; then
      ok=$((ok + 1))
      echo "$secs" >> "$out.times"
    else
      bad=$((bad + 1))
    fi
    i=$((i + 1))
    sleep 1
  done
  read -r p50 p99 < <(sort -g "$out.times" | awk '{v[NR] = $1 * 1000}
    END {if (NR == 0) {print 0, 0; exit}
         i50 = int(NR * 0.5 + 0.5); i99 = int(NR * 0.99 + 0.5)
         if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1
         printf "%.1f %.1f\n", v[i50], v[i99]}')
  echo "$ok $bad $p50 $p99" > "$out"
}

for mode in $MODES; do
  unset PIXSEEK_METADATA_URL PIXSEEK_CACHE_URL PIXSEEK_VECTOR_URL
  [[ $mode == server || $mode == milvus ]] && start_servers
  [[ $mode == milvus ]] && start_milvus
  nodes=$([[ $mode == milvus ]] && echo "$NODES" || echo 1)
  db=$work/db-$mode
  log "$mode: building a database from $DB_IMAGES"
  "$PIXSEEK" build "$DB_IMAGES" --db "$db" --json >/dev/null
  ports=() serve_pids=()
  for ((n = 0; n < nodes; n++)); do
    port=$(free_port)
    # httplib keeps a worker per kept-alive connection: one per client, and spare.
    "$PIXSEEK" serve --db "$db" --port "$port" --quiet --threads $((CONNS / nodes + 4)) \
      --max-concurrent 256 2>"$work/serve-$mode-$n.log" &
    serve_pids+=($!)
    pids+=($!)
    ports+=("$port")
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
  done
  runs=("$CONNS:$DURATION:cold:load" "$CONNS:$DURATION:warm:load")
  if ((LATENCY_CONNS > 0)); then
    runs+=("$LATENCY_CONNS:$LATENCY_DURATION:cold:latency" "$LATENCY_CONNS:$LATENCY_DURATION:warm:latency")
  fi
  for run in "${runs[@]}"; do
    IFS=: read -r conns duration cache list <<< "$run"
    node_conns=$(((conns + nodes - 1) / nodes))
    threads=$((node_conns < 2 ? node_conns : 2))  # wrk needs a connection per thread
    rm -f "$work/stop"
    uploader "${ports[*]}" "$work/stop" "$work/uploads" &
    up_pid=$!
    # One wrk per node, each on its own slice of the query list (the cache
    # is shared in server modes: a slice keeps every query cold).
    wrk_pids=()
    for ((n = 0; n < nodes; n++)); do
      rss_before[n]=$(rss_kb "${serve_pids[n]}")
      read -r passes_before[n] images_before[n] < <(embed_counts "${ports[n]}")
      lines=$(wc -l < "$work/cold-$list.txt")
      per=$((lines / nodes))
      sed -n "$((n * per + 1)),$(((n + 1) * per))p" "$work/cold-$list.txt" > "$work/slice-$n.txt"
      QUERY_LIST=$work/slice-$n.txt QUERY_MODE=$([[ $cache == warm ]] && echo same || echo distinct) \
        WRK_THREADS=$threads wrk -t"$threads" -c"$node_conns" -d"${duration}s" --timeout 30s \
        -s "$root/bench/load/search.lua" "http://127.0.0.1:${ports[n]}" > "$work/wrk-$n.out" &
      wrk_pids+=($!)
    done
    wait "${wrk_pids[@]}"
    touch "$work/stop"
    wait $up_pid
    read -r up_ok up_bad up_p50 up_p99 < "$work/uploads"
    uploads="\"uploads\":$up_ok,\"upload_errors\":$up_bad,\"upload_p50_ms\":$up_p50,\"upload_p99_ms\":$up_p99"
    for ((n = 0; n < nodes; n++)); do
      row=$(tail -n 1 "$work/wrk-$n.out")
      rss_after=$(rss_kb "${serve_pids[n]}")
      kill -0 "${serve_pids[n]}" || { echo "pixseek serve died" >&2; exit 1; }
      read -r passes_after images_after < <(embed_counts "${ports[n]}")
      batching="\"forward_passes\":$((passes_after - passes_before[n])),\"embedded_images\":$((images_after - images_before[n]))"
      echo "{\"mode\":\"$mode\",\"nodes\":$nodes,\"node\":$n,\"cache\":\"$cache\",\"connections\":$node_conns,${row#\{}" |
        sed "s/}\$/,$uploads,\"rss_before_kb\":${rss_before[n]},\"rss_after_kb\":$rss_after,$batching}/"
    done
    if ((nodes > 1)); then
      for ((n = 0; n < nodes; n++)); do tail -n 1 "$work/wrk-$n.out"; done | python3 -c '
import json, sys
rows = [json.loads(line) for line in sys.stdin]
out = {"mode": sys.argv[1], "nodes": len(rows), "node": "all", "cache": sys.argv[2],
       "connections": int(sys.argv[3]), "requests": sum(r["requests"] for r in rows),
       "duration_s": max(r["duration_s"] for r in rows), "rps": round(sum(r["rps"] for r in rows), 1)}
for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
    out[key] = max(r[key] for r in rows)  # the worst node
out["errors"] = sum(r["errors"] for r in rows)
out["non_2xx"] = sum(r["non_2xx"] for r in rows)
print(json.dumps(out | json.loads("{" + sys.argv[4] + "}")))
' "$mode" "$cache" "$conns" "$uploads"
    fi
  done
  for p in "${serve_pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
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
