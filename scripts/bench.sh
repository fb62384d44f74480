#!/usr/bin/env bash
# Runs every Weft benchmark and prints a summary (see BENCHMARKS.md):
#   1. invoke   - fresh-instance invocation and its parts     (cargo bench --bench invoke)
#   2. upload   - upload-to-ready per example plugin          (cargo bench --bench upload)
#   3. restart  - App::open with 100 active plugins, peak RSS (examples/restart.rs)
#   4. http     - wrk against `weft serve` on loopback        (scripts/wrk-invoke.lua)
#   5. ingest   - Segment ingestion with abandoned-cart installed: accepted and processed
#                 events/s, p99 at a fixed 10,000 events/s, profile lookups
#                 (scripts/wrk-ingest.lua, examples/loadgen.rs ingest, scripts/wrk-profile.lua)
#   6. sends    - the send pipeline at 500 and 5,000 messages/s to a fake Twilio, then its
#                 signed status webhooks (examples/loadgen.rs sends)
#   7. chat     - web chat: 5,000 concurrent visitor WebSockets (faq-bot as the default flow),
#                 the server's memory per idle conversation, then bot turn latency at an
#                 open-loop 2,000 messages/s (examples/loadgen.rs chat)
#
#   bash scripts/bench.sh                 # everything (about 6-8 minutes on 2 cores)
#   bash scripts/bench.sh invoke http     # a subset
#
# Knobs: WEFT_BENCH_PORT (18080), WEFT_BENCH_SECONDS (10), WEFT_BENCH_CONNECTIONS (16),
# WEFT_BENCH_THREADS (2), WEFT_BENCH_PLUGINS (100), WEFT_BENCH_RUNS (7), WEFT_BENCH_COLD_RUNS (2),
# WEFT_BENCH_CHAT_CONVERSATIONS (5000), WEFT_BENCH_CHAT_RATE (2000).
# Needs the plugins built first: bash scripts/build-plugins.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(invoke upload restart http ingest sends chat)
port="${WEFT_BENCH_PORT:-18080}"
seconds="${WEFT_BENCH_SECONDS:-10}"
conns="${WEFT_BENCH_CONNECTIONS:-16}"
threads="${WEFT_BENCH_THREADS:-2}"
results="$root/target/bench-results"
mkdir -p "$results"

for p in abandoned-cart tier-personalize zalo-oa faq-bot test-well-behaved sms; do
    if [ ! -f "target/plugins/$p.wasm" ]; then
        echo "error: target/plugins/$p.wasm is missing; run \`bash scripts/build-plugins.sh\` first" >&2
        exit 1
    fi
done

echo "== machine"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "cpus:    $(nproc) x $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
echo "memory:  $(free -h | awk '/^Mem:/ {print $2}')"
echo "load:    $(uptime | sed 's/.*load average: //') (1, 5, 15 min)"
echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# Median (ns) of criterion benchmark "group/function", from its estimates.json (criterion
# stores function ids with `/` replaced by `_`).
median_ns() {
    local group="${1%%/*}" func="${1#*/}"
    local f="target/criterion/$group/${func//\//_}/new/estimates.json"
    [ -f "$f" ] || { echo "nan"; return; }
    sed -E 's/.*"median":\{"confidence_interval":\{[^}]*\},"point_estimate":([0-9.eE+-]+).*/\1/' "$f"
}
# "name | median | target | ratio" row; target in ns ("-" for none).
row() {
    local id="$1" target="$2" ns
    ns="$(median_ns "$id")"
    awk -v id="$id" -v ns="$ns" -v t="$target" 'BEGIN {
        if (ns >= 1e6) m = sprintf("%.1f ms", ns / 1e6); else if (ns >= 1e3) m = sprintf("%.2f us", ns / 1e3); else m = sprintf("%.0f ns", ns);
        if (t == "-") { r = "-"; tt = "-" } else { r = sprintf("%.2fx", ns / t); tt = (t >= 1e6 ? sprintf("%g ms", t / 1e6) : sprintf("%g us", t / 1e3)) }
        printf "| %-55s | %10s | %8s | %6s |\n", id, m, tt, r }'
}

summary=()
for s in "${sections[@]}"; do
    case "$s" in
    invoke)
        echo "== invoke: cargo bench -p weft --bench invoke"
        cargo bench -p weft --bench invoke
        summary+=("| Benchmark | Median | Target | Ratio |" "|---|---|---|---|")
        summary+=("$(row invoke/abandoned-cart/fresh-instance 10000)")
        summary+=("$(row invoke/abandoned-cart/instantiate-only -)")
        summary+=("$(row invoke/abandoned-cart/call-on-warm-instance 1000)")
        summary+=("$(row invoke/abandoned-cart/describe-on-warm-instance 1000)")
        summary+=("$(row invoke/test-well-behaved/fresh-instance-with-host-calls -)")
        summary+=("$(row invoke/test-well-behaved/call-on-warm-instance -)")
        summary+=("$(row invoke/test-well-behaved/describe-on-warm-instance -)")
        for p in wasi-ctx-build store-new-and-drop output-json-size-check call-clone call-parse-json; do
            summary+=("$(row "invoke-parts/$p" -)")
        done
        for v in keep-resident-2MiB/pagemap-off keep-resident-2MiB/pagemap-auto keep-resident-0/pagemap-off keep-resident-2MiB/pagemap-auto/no-fuel; do
            summary+=("$(row "pooling-variants/fresh-instance/$v" 10000)")
        done
        summary+=("$(row invoke-on-demand-allocator/abandoned-cart/fresh-instance -)")
        ;;
    upload)
        echo "== upload: cargo bench -p weft --bench upload"
        cargo bench -p weft --bench upload
        summary+=("" "| Benchmark | Median | Target | Ratio |" "|---|---|---|---|")
        for p in abandoned-cart tier-personalize zalo-oa faq-bot; do
            summary+=("$(row "upload-to-ready/$p" -)")
        done
        for p in abandoned-cart tier-personalize zalo-oa faq-bot; do
            summary+=("$(row "load-from-artifact/$p" -)")
        done
        ;;
    restart)
        echo "== restart: cargo run --release -p weft --example restart"
        cargo run --release -p weft --example restart -- \
            --plugins "${WEFT_BENCH_PLUGINS:-100}" --runs "${WEFT_BENCH_RUNS:-7}" \
            --cold-runs "${WEFT_BENCH_COLD_RUNS:-2}" | tee "$results/restart.md"
        summary+=("" "$(cat "$results/restart.md")")
        ;;
    http)
        echo "== http: weft serve on 127.0.0.1:$port, ${threads} threads, ${conns} connections, ${seconds} s"
        cargo build --release -p weft --bin weft --example loadgen
        data="$(mktemp -d)"
        token="wat_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
        RUST_LOG="${RUST_LOG:-info}" WEFT_ADMIN_TOKEN="$token" \
            target/release/weft serve --listen "127.0.0.1:$port" --data-dir "$data/data" \
            >"$results/serve.log" 2>&1 &
        server=$!
        # Stop only the server this script started.
        trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
        for _ in $(seq 1 100); do
            curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
            kill -0 "$server" 2>/dev/null || { echo "error: weft serve exited; see $results/serve.log" >&2; exit 1; }
            sleep 0.1
        done
        target/release/examples/loadgen setup --url "http://127.0.0.1:$port" --admin-token "$token" --out "$data/load"
        key="$(cat "$data/load/key")"
        summary+=("" "| HTTP (${threads} threads, ${conns} connections, ${seconds} s, loopback) | Requests/s | p50 | p90 | p99 | Errors / non-2xx |" "|---|---|---|---|---|---|")
        for route in healthz invoke; do
            if [ "$route" = healthz ]; then
                url="http://127.0.0.1:$port/healthz"; body=""
            else
                url="http://127.0.0.1:$port/v1/plugins/abandoned-cart/invoke"; body="$data/load/entered.json"
            fi
            if command -v wrk >/dev/null 2>&1; then
                tool=wrk
                WEFT_KEY="$key" WEFT_BODY_FILE="$body" wrk -t"$threads" -c"$conns" -d"${seconds}s" \
                    --latency -s scripts/wrk-invoke.lua "$url" | tee "$results/http-$route.txt"
            else
                tool=loadgen
                echo "(wrk not installed: using examples/loadgen.rs)"
                args=(run --url "$url" --connections "$conns" --seconds "$seconds")
                [ -n "$body" ] && args+=(--key "$key" --body "$body")
                target/release/examples/loadgen "${args[@]}" | tee "$results/http-$route.txt"
            fi
            line="$(grep '^RESULT' "$results/http-$route.txt")"
            get() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<" $line"; }
            summary+=("$(printf '| %s %s | %s | %.2f ms | %.2f ms | %.2f ms | %s / %s |' "$tool" \
                "$([ "$route" = healthz ] && echo 'GET /healthz' || echo 'POST /v1/plugins/abandoned-cart/invoke')" \
                "$(get rps)" "$(awk -v v="$(get p50_us)" 'BEGIN{print v/1000}')" \
                "$(awk -v v="$(get p90_us)" 'BEGIN{print v/1000}')" \
                "$(awk -v v="$(get p99_us)" 'BEGIN{print v/1000}')" "$(get errors)" "$(get non2xx)")")
        done
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        rm -rf "$data"
        trap - EXIT
        ;;
    ingest)
        echo "== ingest: weft serve on 127.0.0.1:$port with abandoned-cart installed"
        cargo build --release -p weft --bin weft --example loadgen
        data="$(mktemp -d)"
        token="wat_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
        RUST_LOG="${RUST_LOG:-warn}" WEFT_ADMIN_TOKEN="$token" \
            target/release/weft serve --listen "127.0.0.1:$port" --data-dir "$data/data" \
            >"$results/serve-ingest.log" 2>&1 &
        server=$!
        trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
        for _ in $(seq 1 100); do
            curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
            sleep 0.1
        done
        target/release/examples/loadgen setup --url "http://127.0.0.1:$port" --admin-token "$token" --out "$data/load"
        key="$(cat "$data/load/key")"; wkey="$(cat "$data/load/write_key")"
        base="http://127.0.0.1:$port"
        status() { curl -fsS -H "Authorization: Bearer $key" "$base/v1/ingest/status"; }
        # Waits until every accepted event is processed (at most 10 minutes); prints seconds.
        drain() {
            local t0=$SECONDS
            for _ in $(seq 1 600); do
                status | grep -q '"backlog":0' && break
                sleep 1
            done
            echo $((SECONDS - t0))
        }
        summary+=("" "| Ingest (loopback, abandoned-cart installed, 100,000 users) | Events/s | p50 | p99 | Errors |" "|---|---|---|---|---|")
        fmt_row() { # label, RESULT line, events/s key
            local line="$2"
            get() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<" $line"; }
            summary+=("$(printf '| %s | %s | %.2f ms | %.2f ms | %s |' "$1" "$(get "$3")" \
                "$(awk -v v="$(get p50_us)" 'BEGIN{print v/1000}')" "$(awk -v v="$(get p99_us)" 'BEGIN{print v/1000}')" "$(get errors)")")
        }
        t_start=$SECONDS
        WEFT_WRITE_KEY="$wkey" WEFT_BATCH=50 wrk -t"$threads" -c16 -d"${seconds}s" --latency \
            -s scripts/wrk-ingest.lua "$base" | tee "$results/ingest-batch.txt"
        fmt_row "wrk, /v1/batch of 50, 16 connections: accepted" "$(grep '^RESULT' "$results/ingest-batch.txt")" eps
        waited=$(drain)
        processed=$(status | sed -E 's/.*"processed":([0-9]+).*/\1/')
        summary+=("| processing (profiles + journeys) of those events, start to drained | $(awk -v p="$processed" -v t="$((SECONDS - t_start))" 'BEGIN{printf "%.0f", p/t}') | | | drained ${waited} s after the load |")
        WEFT_WRITE_KEY="$wkey" WEFT_BATCH=1 wrk -t"$threads" -c32 -d"${seconds}s" --latency \
            -s scripts/wrk-ingest.lua "$base" | tee "$results/ingest-single.txt"
        fmt_row "wrk, /v1/track one event per request, 32 connections: accepted" "$(grep '^RESULT' "$results/ingest-single.txt")" eps
        drain >/dev/null
        for batch in 1 50; do
            target/release/examples/loadgen ingest --url "$base" --write-key "$wkey" --rate 10000 \
                --batch "$batch" --seconds "$seconds" | tee "$results/ingest-rate-$batch.txt"
            fmt_row "loadgen open loop at 10,000 events/s, batch $batch" "$(grep '^RESULT' "$results/ingest-rate-$batch.txt")" eps
            drain >/dev/null
        done
        WEFT_KEY="$key" wrk -t"$threads" -c16 -d"${seconds}s" --latency -s scripts/wrk-profile.lua "$base" \
            | tee "$results/profile-lookup.txt"
        fmt_row "wrk, GET /v1/profiles/user_id:uN (360 view), 16 connections: lookups" "$(grep '^RESULT' "$results/profile-lookup.txt")" rps
        summary+=("" "server RSS after the run: $(ps -o rss= -p "$server" | awk '{printf "%.0f MiB", $1/1024}'), data directory: $(du -sh "$data/data" | cut -f1)")
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        rm -rf "$data"
        trap - EXIT
        ;;
    sends)
        echo "== sends: weft serve on 127.0.0.1:$port, sms adapter -> loadgen's fake Twilio"
        cargo build --release -p weft --bin weft --example loadgen
        data="$(mktemp -d)"
        token="wat_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
        # The fake provider listens on 127.0.0.1, which a server refuses by default.
        printf '[runtime]\nallow_private_networks = true\n' >"$data/weft.toml"
        RUST_LOG="${RUST_LOG:-warn}" WEFT_ADMIN_TOKEN="$token" \
            target/release/weft serve --listen "127.0.0.1:$port" --data-dir "$data/data" \
            --config "$data/weft.toml" >"$results/serve-sends.log" 2>&1 &
        server=$!
        trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
        for _ in $(seq 1 100); do
            curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
            sleep 0.1
        done
        summary+=("" "| Sends (POST /v1/messages -> policy -> sms adapter -> fake Twilio) | Requested/s | Sent/s | to provider p50 | p99 | Webhooks/s (signed status callbacks) | p50 | p99 |" "|---|---|---|---|---|---|---|---|")
        for rate in 500 5000; do
            target/release/examples/loadgen sends --url "http://127.0.0.1:$port" --admin-token "$token" \
                --rate "$rate" --seconds "$seconds" --profiles 10000 --webhook-connections 64 \
                | tee "$results/sends-$rate.txt"
            s_line="$(grep '^RESULT sends' "$results/sends-$rate.txt")"
            w_line="$(grep '^RESULT webhooks' "$results/sends-$rate.txt")"
            sget() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<" $2"; }
            summary+=("$(printf '| %s | %s | %s | %.2f ms | %.2f ms | %s | %.2f ms | %.2f ms |' "open loop at $rate/s" "$rate" \
                "$(sget sends_per_s "$s_line")" \
                "$(awk -v v="$(sget to_provider_p50_us "$s_line")" 'BEGIN{print v/1000}')" \
                "$(awk -v v="$(sget to_provider_p99_us "$s_line")" 'BEGIN{print v/1000}')" \
                "$(sget rps "$w_line")" \
                "$(awk -v v="$(sget p50_us "$w_line")" 'BEGIN{print v/1000}')" \
                "$(awk -v v="$(sget p99_us "$w_line")" 'BEGIN{print v/1000}')")")
        done
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        rm -rf "$data"
        trap - EXIT
        ;;
    chat)
        chat_convs="${WEFT_BENCH_CHAT_CONVERSATIONS:-5000}"
        chat_rate="${WEFT_BENCH_CHAT_RATE:-2000}"
        echo "== chat: weft serve on 127.0.0.1:$port, ${chat_convs} visitor sockets, ${chat_rate} messages/s for ${seconds} s"
        cargo build --release -p weft --bin weft --example loadgen
        # One descriptor per socket on each side, plus the server's own files: raise the
        # soft limit (inherited by both processes) to 16384 when it is lower, or as far as
        # the hard limit allows.
        if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt 16384 ]; then
            ulimit -Sn 16384 2>/dev/null || ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
        fi
        echo "open files limit: $(ulimit -Sn) (hard $(ulimit -Hn))"
        if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt $((chat_convs + 256)) ]; then
            echo "warning: $(ulimit -Sn) descriptors is too few for ${chat_convs} sockets; some will fail to open" >&2
        fi
        data="$(mktemp -d)"
        token="wat_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
        RUST_LOG="${RUST_LOG:-warn}" WEFT_ADMIN_TOKEN="$token" \
            target/release/weft serve --listen "127.0.0.1:$port" --data-dir "$data/data" \
            >"$results/serve-chat.log" 2>&1 &
        server=$!
        trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
        for _ in $(seq 1 100); do
            curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
            kill -0 "$server" 2>/dev/null || { echo "error: weft serve exited; see $results/serve-chat.log" >&2; exit 1; }
            sleep 0.1
        done
        target/release/examples/loadgen chat --url "http://127.0.0.1:$port" --admin-token "$token" \
            --conversations "$chat_convs" --rate "$chat_rate" --seconds "$seconds" --server-pid "$server" \
            | tee "$results/chat.txt"
        line="$(grep '^RESULT chat' "$results/chat.txt")"
        cget() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<" $line"; }
        summary+=("" "| Web chat (loopback, faq-bot, ${seconds} s) | Result | Target |" "|---|---|---|")
        summary+=("| visitor sockets open (hello -> ready), requested ${chat_convs} | $(cget conversations) in $(cget open_s) s | 5,000 concurrent |")
        summary+=("| bot turn latency (send -> first bot message), p50 / p90 | $(cget p50_ms) ms / $(cget p90_ms) ms | - |")
        summary+=("| bot turn latency p99 (max $(cget max_ms) ms) | $(cget p99_ms) ms | <= 5 ms at 2,000 messages/s |")
        summary+=("| messages/s answered (bot replies/s, first send to last reply; open loop at ${chat_rate}/s): sent / replied / error frames / sockets closed | $(cget achieved_per_s) ($(cget sent) / $(cget replied) / $(cget errors) / $(cget closed)) | 2,000 |")
        summary+=("| server memory per idle conversation (VmRSS $(cget rss_before_mib) -> $(cget rss_after_mib) MiB) | $(cget idle_kib_per_conversation) KiB | reported |")
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        rm -rf "$data"
        trap - EXIT
        ;;
    *)
        echo "error: unknown section \`$s\` (invoke, upload, restart, http, ingest, sends, chat)" >&2
        exit 1
        ;;
    esac
done

echo
echo "== summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), load $(uptime | sed 's/.*load average: //'))"
printf '%s\n' "${summary[@]}"
