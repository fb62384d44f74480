#!/usr/bin/env bash
# Runs every Weft benchmark and prints a summary (see BENCHMARKS.md):
#   1. invoke   - fresh-instance invocation and its parts     (cargo bench --bench invoke)
#   2. upload   - upload-to-ready per example plugin          (cargo bench --bench upload)
#   3. restart  - App::open with 100 active plugins, peak RSS (examples/restart.rs)
#   4. http     - wrk against `weft serve` on loopback        (scripts/wrk-invoke.lua)
#   5. ingest   - Segment ingestion with abandoned-cart installed: accepted and processed
#                 events/s, p99 at a fixed 10,000 events/s, profile lookups (wrk, then open
#                 loop at 1,000 and 2,000/s, right after the ingest steps and again once
#                 the server is idle)
#                 (scripts/wrk-ingest.lua, examples/loadgen.rs ingest, scripts/wrk-profile.lua)
#   6. sends    - the send pipeline at 500 and 5,000 messages/s to a fake Twilio, and at
#                 2,000/s to one answering in 100 ms, each followed by its signed status
#                 webhooks (examples/loadgen.rs sends)
#   7. chat     - web chat: 5,000 concurrent visitor WebSockets (faq-bot as the default flow),
#                 the server's memory per idle conversation, then bot turn latency at an
#                 open-loop 2,000 messages/s (examples/loadgen.rs chat)
#   8. personalize - POST /v1/personalize (tier-personalize, placements hero + recs, 100,000
#                 profiles) side by side with the same logic compiled natively into an axum
#                 server (examples/personalize_native.rs) and as JavaScript in node:vm with a
#                 fresh context per request and with one reused context
#                 (scripts/personalize-vm.js): max throughput, p50/p90/p99 at 1,000, 5,000 and
#                 10,000 requests/s, peak RSS, ratios (scripts/wrk-personalize.lua; about 5
#                 minutes; builds the plugins, installs wrk and nodejs with apt-get if missing;
#                 not in the default set)
#
#   bash scripts/bench.sh                 # everything but personalize (about 6-8 minutes on 2 cores)
#   bash scripts/bench.sh invoke http     # a subset
#   bash scripts/bench.sh personalize     # Weft vs native vs node:vm, edge personalization
#
# Knobs: WEFT_BENCH_PORT (18080), WEFT_BENCH_SECONDS (10), WEFT_BENCH_CONNECTIONS (16),
# WEFT_BENCH_THREADS (2), WEFT_BENCH_PLUGINS (100), WEFT_BENCH_RUNS (7), WEFT_BENCH_COLD_RUNS (2),
# WEFT_BENCH_CHAT_CONVERSATIONS (5000), WEFT_BENCH_CHAT_RATE (2000),
# WEFT_BENCH_PZ_PROFILES (100000), WEFT_BENCH_PZ_CONNECTIONS (32),
# WEFT_BENCH_PZ_RATES ("1000 5000 10000"), WEFT_BENCH_PZ_RATE_SECONDS (WEFT_BENCH_SECONDS).
# Needs the plugins built first: bash scripts/build-plugins.sh (personalize builds them).
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

# personalize measures tier-personalize as it is in the tree.
if [[ " ${sections[*]} " == *" personalize "* ]]; then
    bash scripts/build-plugins.sh
fi

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

# The same CPU-bound work timed at the start and at the end: a fresh-instance invocation of
# abandoned-cart in a loop (examples/invoke_loop.rs). On this 2-core VM a quiet sitting gives
# about 12.5 us; busy neighbours have shown 16-19 us with the same binary, and then every
# other figure of the run is slower too, tails most of all.
cargo build --release -p weft --example invoke_loop
machine_check() {
    local runs=()
    for _ in 1 2 3; do
        runs+=("$(target/release/examples/invoke_loop 20000 | sed -n 's/.*mean_us=//p') us")
    done
    echo "machine check ($1): fresh-instance invocation in a loop, 3 runs: ${runs[*]} (quiet: about 12.5 us)"
}
check_start="$(machine_check start)"
echo "$check_start"

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
        # Waits until every accepted event is processed by the profile processor (at most 10
        # minutes); prints seconds.
        drain() {
            local t0=$SECONDS
            for _ in $(seq 1 600); do
                status | grep -q '"backlog":0' && break
                sleep 1
            done
            echo $((SECONDS - t0))
        }
        # Waits until the journey work those events made has run too (the journey runner
        # works after the processor: an event that enters a journey is done only then).
        settle() {
            local t0=$SECONDS
            for _ in $(seq 1 600); do
                local now; now="$(status)"
                grep -q '"backlog":0' <<<"$now" && grep -q '"busy":false' <<<"$now" && break
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
        summary+=("| profile processing of those events (identities, traits, history), start to drained | $(awk -v p="$processed" -v t="$((SECONDS - t_start))" 'BEGIN{printf "%.0f", p/t}') | | | drained ${waited} s after the load |")
        settled=$(settle)
        summary+=("| the whole pipeline: profiles and the journey steps the events started, start to idle | $(awk -v p="$processed" -v t="$((SECONDS - t_start))" 'BEGIN{printf "%.0f", p/t}') | | | idle ${settled} s after the profiles |")
        WEFT_WRITE_KEY="$wkey" WEFT_BATCH=1 wrk -t"$threads" -c32 -d"${seconds}s" --latency \
            -s scripts/wrk-ingest.lua "$base" | tee "$results/ingest-single.txt"
        fmt_row "wrk, /v1/track one event per request, 32 connections: accepted" "$(grep '^RESULT' "$results/ingest-single.txt")" eps
        settle >/dev/null
        for batch in 1 50; do
            target/release/examples/loadgen ingest --url "$base" --write-key "$wkey" --rate 10000 \
                --batch "$batch" --seconds "$seconds" | tee "$results/ingest-rate-$batch.txt"
            fmt_row "loadgen open loop at 10,000 events/s, batch $batch" "$(grep '^RESULT' "$results/ingest-rate-$batch.txt")" eps
            settle >/dev/null
        done
        WEFT_KEY="$key" wrk -t"$threads" -c16 -d"${seconds}s" --latency -s scripts/wrk-profile.lua "$base" \
            | tee "$results/profile-lookup.txt"
        fmt_row "wrk, GET /v1/profiles/user_id:uN (360 view), 16 connections: lookups" "$(grep '^RESULT' "$results/profile-lookup.txt")" rps
        # The lookup latency target at fixed rates (open loop; the wrk run above warmed the cache).
        for rate in 1000 2000; do
            target/release/examples/loadgen lookups --url "$base" --key "$key" --rate "$rate" \
                --seconds "$seconds" | tee "$results/profile-lookup-$rate.txt"
            fmt_row "loadgen open loop at $rate lookups/s (360 view)" "$(grep '^RESULT' "$results/profile-lookup-$rate.txt")" rps
        done
        # The rows above run once the event and journey backlogs of the ingest steps are
        # done (`settle`), but other work (the store's compaction, the audience sweep) may
        # still run: the same lookups again once the server is idle (under 20 clock ticks of 1/100 s, 10%
        # of a core, in 2 s; at most 3 minutes of waiting).
        t_idle=$SECONDS
        while [ $((SECONDS - t_idle)) -lt 180 ]; do
            c0=$(awk '{print $14 + $15}' "/proc/$server/stat")
            sleep 2
            c1=$(awk '{print $14 + $15}' "/proc/$server/stat")
            [ $((c1 - c0)) -lt 20 ] && break
        done
        waited=$((SECONDS - t_idle))
        echo "server idle after $waited s"
        for rate in 1000 2000; do
            target/release/examples/loadgen lookups --url "$base" --key "$key" --rate "$rate" \
                --seconds "$seconds" | tee "$results/profile-lookup-idle-$rate.txt"
            fmt_row "loadgen open loop at $rate lookups/s (360 view), idle server (after waiting $waited s)" "$(grep '^RESULT' "$results/profile-lookup-idle-$rate.txt")" rps
        done
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
        # "to provider" runs from each request's scheduled time; "from request" from when the
        # load generator actually sent it (its timer wakes up to 1 ms late).
        summary+=("" "| Sends (POST /v1/messages -> policy -> sms adapter -> fake Twilio) | Requested/s | Sent/s | to provider p50 | p99 | from request p99 | Webhooks/s (signed status callbacks) | p50 | p99 |" "|---|---|---|---|---|---|---|---|---|")
        # rate:provider latency (ms). The last run's provider answers in 100 ms, as real
        # ones take tens to hundreds of ms: sends waiting for it must not hold threads.
        for run in 500:0 5000:0 2000:100; do
            rate="${run%%:*}" latency="${run##*:}"
            target/release/examples/loadgen sends --url "http://127.0.0.1:$port" --admin-token "$token" \
                --rate "$rate" --seconds "$seconds" --profiles 10000 --webhook-connections 64 \
                --provider-latency-ms "$latency" | tee "$results/sends-$rate-$latency.txt"
            s_line="$(grep '^RESULT sends' "$results/sends-$rate-$latency.txt")"
            w_line="$(grep '^RESULT webhooks' "$results/sends-$rate-$latency.txt")"
            sget() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<" $2"; }
            summary+=("$(printf '| %s | %s | %s | %.2f ms | %.2f ms | %.2f ms | %s | %.2f ms | %.2f ms |' "open loop at $rate/s, provider answering in $latency ms" "$rate" \
                "$(sget sends_per_s "$s_line")" \
                "$(awk -v v="$(sget to_provider_p50_us "$s_line")" 'BEGIN{print v/1000}')" \
                "$(awk -v v="$(sget to_provider_p99_us "$s_line")" 'BEGIN{print v/1000}')" \
                "$(awk -v v="$(sget from_request_p99_us "$s_line")" 'BEGIN{print v/1000}')" \
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
    personalize)
        pz_profiles="${WEFT_BENCH_PZ_PROFILES:-100000}"
        pz_conns="${WEFT_BENCH_PZ_CONNECTIONS:-32}"
        pz_rates="${WEFT_BENCH_PZ_RATES:-1000 5000 10000}"
        pz_rate_seconds="${WEFT_BENCH_PZ_RATE_SECONDS:-$seconds}"
        echo "== personalize: POST /v1/personalize, ${pz_profiles} profiles; Weft, native, node:vm fresh, node:vm reused on 127.0.0.1:$port-$((port + 3))"
        # wrk and node from Debian when missing (sudo when not root).
        pz_need() { # command, package
            command -v "$1" >/dev/null 2>&1 && return 0
            echo "installing $2 with apt-get"
            local sudo=()
            [ "$(id -u)" -eq 0 ] || sudo=(sudo)
            "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq "$2" >/dev/null
            command -v "$1" >/dev/null 2>&1 || { echo "error: could not install $2" >&2; exit 1; }
        }
        pz_need wrk wrk
        pz_need node nodejs
        echo "wrk: $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), node: $(node --version)"
        cargo build --release -p weft --bin weft --example loadgen --example personalize_native
        data="$(mktemp -d)"
        pz_pids=()
        # Stop only the servers this section started.
        pz_stop() {
            local p
            for p in "${pz_pids[@]}"; do
                kill "$p" 2>/dev/null || true
                wait "$p" 2>/dev/null || true
            done
            pz_pids=()
        }
        trap 'pz_stop; rm -rf "$data"' EXIT
        pz_up() { # url, pid, log
            for _ in $(seq 1 300); do
                curl -fsS "$1/healthz" >/dev/null 2>&1 && return 0
                kill -0 "$2" 2>/dev/null || { echo "error: the server exited; see $3" >&2; exit 1; }
                sleep 0.1
            done
            echo "error: $1 did not come up; see $3" >&2
            exit 1
        }
        pz_peak() { # pid -> "VmHWM VmRSS" in KiB
            awk '/^VmHWM:/ {h = $2} /^VmRSS:/ {r = $2} END {print h, r}' "/proc/$1/status"
        }
        pz_wrk() { # out file, url, wrk -d duration, extra env...
            local f="$1" url="$2" d="$3"
            shift 3
            env WEFT_WRITE_KEY="$wkey" WEFT_PROFILES="$pz_profiles" WEFT_THREADS="$threads" "$@" \
                wrk -t"$threads" -c"$pz_conns" -d"$d" --latency -s scripts/wrk-personalize.lua "$url" >"$f"
            grep '^RESULT' "$f" || { echo "error: no RESULT line in $f" >&2; cat "$f" >&2; exit 1; }
        }
        declare -A pz_res=() pz_mem=()
        # Warm-up, max throughput, then each fixed rate; peak memory at the end.
        pz_measure() { # name, url, pid
            local name="$1" url="$2" pid="$3" r
            echo "-- $name: max throughput (${seconds} s)"
            pz_res["$name:max"]="$(pz_wrk "$results/personalize-$name-max.txt" "$url" "${seconds}s")"
            echo "${pz_res["$name:max"]}"
            for r in $pz_rates; do
                echo "-- $name: ${r} requests/s (${pz_rate_seconds} s)"
                pz_res["$name:$r"]="$(pz_wrk "$results/personalize-$name-$r.txt" "$url" "${pz_rate_seconds}s" \
                    WEFT_RATE="$r" WEFT_CONNS="$pz_conns")"
                echo "${pz_res["$name:$r"]}"
            done
            pz_mem["$name"]="$(pz_peak "$pid")"
            echo "-- $name: VmHWM / VmRSS KiB: ${pz_mem["$name"]}"
        }

        # Weft: a tenant with tier-personalize, the audience vip, the settings, the profiles.
        target/release/examples/personalize_native --print-settings >"$data/settings.json"
        token="wat_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
        base="http://127.0.0.1:$port"
        RUST_LOG="${RUST_LOG:-warn}" WEFT_ADMIN_TOKEN="$token" \
            target/release/weft serve --listen "127.0.0.1:$port" --data-dir "$data/data" \
            >"$results/serve-personalize.log" 2>&1 &
        server=$!
        pz_pids+=("$server")
        pz_up "$base" "$server" "$results/serve-personalize.log"
        pz_rss() { awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
        rss_started="$(pz_rss "$server")"
        t_setup=$SECONDS
        target/release/examples/loadgen personalize-setup --url "$base" --admin-token "$token" \
            --settings "$data/settings.json" --profiles "$pz_profiles" --batch 500 --out "$data/load" \
            | tee "$results/personalize-setup.txt"
        key="$(cat "$data/load/key")"
        wkey="$(cat "$data/load/write_key")"
        rss_loaded="$(pz_rss "$server")"
        pz_status() { curl -fsS -H "Authorization: Bearer $key" "$base/v1/personalize/status"; }
        # Fills the profile cache: sequential passes over u1..uN until every user was asked
        # for once (at most 60 s).
        echo "-- weft: warm-up (profile cache) over ${pz_profiles} users"
        warm=0
        t_warm=$SECONDS
        while [ "$warm" -lt "$pz_profiles" ] && [ $((SECONDS - t_warm)) -lt 60 ]; do
            line="$(pz_wrk "$results/personalize-weft-warmup.txt" "$base" 5s WEFT_SEQUENTIAL=1 WEFT_SEQ_OFFSET="$warm")"
            warm=$((warm + $(sed -E 's/.* requests=([0-9]+).*/\1/' <<<"$line")))
        done
        echo "warm-up: $warm requests in $((SECONDS - t_warm)) s"
        rss_warm="$(pz_rss "$server")"
        status_before="$(pz_status)"
        echo "status before the runs: $status_before"
        pz_measure weft "$base" "$server"
        status_after="$(pz_status)"
        echo "status after the runs: $status_after"
        sample="$(curl -fsS -X POST -H 'Content-Type: text/plain' "$base/v1/personalize?writeKey=$wkey" \
            -d '{"userId":"u70","placements":["hero","recs"]}')"
        echo "$sample" >"$results/personalize-weft-sample.json"
        pz_stop

        # The same logic natively, then in node:vm, on the same settings and users.
        target/release/examples/personalize_native --port $((port + 1)) --profiles "$pz_profiles" \
            --settings "$data/settings.json" >"$results/personalize-native.log" 2>&1 &
        pz_pids+=("$!")
        pz_up "http://127.0.0.1:$((port + 1))" "$!" "$results/personalize-native.log"
        pz_wrk "$results/personalize-native-warmup.txt" "http://127.0.0.1:$((port + 1))" 3s >/dev/null
        pz_measure native "http://127.0.0.1:$((port + 1))" "${pz_pids[0]}"
        pz_stop
        mode_port=$((port + 2))
        for mode in fresh reused; do
            node scripts/personalize-vm.js --port "$mode_port" --mode "$mode" --profiles "$pz_profiles" \
                --settings "$data/settings.json" >"$results/personalize-node-vm-$mode.log" 2>&1 &
            pz_pids+=("$!")
            pz_up "http://127.0.0.1:$mode_port" "$!" "$results/personalize-node-vm-$mode.log"
            pz_wrk "$results/personalize-node-vm-$mode-warmup.txt" "http://127.0.0.1:$mode_port" 3s >/dev/null
            pz_measure "node-vm-$mode" "http://127.0.0.1:$mode_port" "${pz_pids[0]}"
            pz_stop
            mode_port=$((mode_port + 1))
        done
        rm -rf "$data"
        trap - EXIT

        # The tables.
        pz_names=(weft native node-vm-fresh node-vm-reused)
        pz_get() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<" ${pz_res["$2"]}"; }
        pz_ms() { awk -v v="$1" 'BEGIN {printf "%.2f", v / 1000}'; }
        pz_lat() { echo "$(pz_ms "$(pz_get p50_us "$1")") / $(pz_ms "$(pz_get p90_us "$1")") / $(pz_ms "$(pz_get p99_us "$1")") ms"; }
        pz_group() { sed -E ':a; s/^([0-9]+)([0-9]{3})/\1,\2/; ta' <<<"$1"; }
        pz_ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2fx", a / b; else print "-"}'; }
        out=()
        out+=("| POST /v1/personalize, hero + recs, $(pz_group "$pz_profiles") profiles (wrk -t${threads} -c${pz_conns}, loopback, $(nproc) cores shared with wrk) | Weft (fresh Wasm instance) | native (axum) | node:vm, fresh context | node:vm, reused context |")
        out+=("|---|---|---|---|---|")
        row_cells() { # label, function printing one cell for (server name, argument), argument
            local label="$1" fn="$2" a="${3:-}" line n
            line="| $label |"
            for n in "${pz_names[@]}"; do line+=" $("$fn" "$n" "$a") |"; done
            out+=("$line")
        }
        cell_max() { pz_group "$(pz_get rps "$1:max")"; }
        cell_max_lat() { pz_lat "$1:max"; }
        cell_rate() { echo "$(pz_group "$(pz_get rps "$1:$2")")/s: $(pz_lat "$1:$2")"; }
        row_cells "max throughput, requests/s (${seconds} s)" cell_max
        row_cells "latency at max throughput, p50 / p90 / p99" cell_max_lat
        for r in $pz_rates; do
            row_cells "at $(pz_group "$r") requests/s (${pz_rate_seconds} s): achieved rate: p50 / p90 / p99" cell_rate "$r"
        done
        cell_mem() { local h r; read -r h r <<<"${pz_mem["$1"]}"; awk -v h="$h" -v r="$r" 'BEGIN {printf "%.0f MiB (%.0f MiB)", h / 1024, r / 1024}'; }
        row_cells "peak RSS: VmHWM (VmRSS after the runs)" cell_mem
        cell_err() {
            local e=0 x=0 k
            for k in max $pz_rates; do
                e=$((e + $(pz_get errors "$1:$k")))
                x=$((x + $(pz_get non2xx "$1:$k")))
            done
            echo "$e / $x"
        }
        row_cells "socket errors / non-2xx, all runs" cell_err
        pz_json() { sed -E "s/.*\"$1\":([0-9]+).*/\1/" <<<"$2"; }
        out+=("| decisions from the plugin / from the tenant's defaults (plugin failed, late or quarantined), all runs | $(( $(pz_json plugin_decisions "$status_after") - $(pz_json plugin_decisions "$status_before") )) / $(( $(pz_json default_decisions "$status_after") - $(pz_json default_decisions "$status_before") )) | all plugin | all plugin | all plugin |")
        out+=("")
        header="| Weft ÷ | throughput | peak RSS |"
        sep="|---|---|---|"
        for r in $pz_rates; do
            header+=" p50 at $(pz_group "$r")/s | p99 at $(pz_group "$r")/s |"
            sep+="---|---|"
        done
        out+=("$header" "$sep")
        for n in native node-vm-fresh node-vm-reused; do
            read -r wh _ <<<"${pz_mem[weft]}"
            read -r nh _ <<<"${pz_mem[$n]}"
            line="| $n | $(pz_ratio "$(pz_get rps weft:max)" "$(pz_get rps "$n:max")") | $(pz_ratio "$wh" "$nh") |"
            for r in $pz_rates; do
                line+=" $(pz_ratio "$(pz_get p50_us "weft:$r")" "$(pz_get p50_us "$n:$r")") | $(pz_ratio "$(pz_get p99_us "weft:$r")" "$(pz_get p99_us "$n:$r")") |"
            done
            out+=("$line")
        done
        out+=("")
        out+=("Weft setup: $(grep '^RESULT' "$results/personalize-setup.txt" | sed 's/^RESULT personalize_setup //') (setup to warm-up $((t_warm - t_setup)) s; warm-up $warm requests). Weft VmRSS: ${rss_started} MiB started, ${rss_loaded} MiB with the profiles ingested, ${rss_warm} MiB after the warm-up (profile cache full).")
        out+=("Weft's answer for u70 (gold, vip): $(sed -E 's/"payload":\{[^}]*\}/"payload":{…}/g' <<<"$sample")")
        out+=("Weft /v1/personalize/status before the runs: \`$status_before\`")
        out+=("Weft /v1/personalize/status after the runs: \`$status_after\`")
        out+=("Throughput is closed-loop (${pz_conns} connections, no pacing); at a fixed rate each connection waits before its next request so the total approximates the target, and wrk's latency excludes the wait; a server that cannot sustain the rate shows a lower achieved rate. Weft's peak RSS includes ingesting the ${pz_profiles} profiles (sled) and its profile cache; the others hold them in a map.")
        printf '%s\n' "${out[@]}" >"$results/personalize.md"
        summary+=("" "${out[@]}")
        ;;
    *)
        echo "error: unknown section \`$s\` (invoke, upload, restart, http, ingest, sends, chat, personalize)" >&2
        exit 1
        ;;
    esac
done

check_end="$(machine_check end)"
echo
echo "== summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), load $(uptime | sed 's/.*load average: //'))"
echo "$check_start"
echo "$check_end"
printf '%s\n' "${summary[@]}"
