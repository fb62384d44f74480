-- wrk script for Weft's profile lookup benchmark (used by scripts/bench.sh):
--   WEFT_KEY=wsk_... WEFT_PROFILES=100000 wrk -t2 -c16 -d10s -s scripts/wrk-profile.lua http://127.0.0.1:18080
-- GETs the 360 view of a random user among u1..uN (ingested earlier by the ingest bench).
local key = os.getenv("WEFT_KEY") or ""
local profiles = tonumber(os.getenv("WEFT_PROFILES") or "100000")

function init(args)
    math.randomseed(os.time() + math.random(1, 1000000))
    wrk.headers["Authorization"] = "Bearer " .. key
end

function request()
    return wrk.format("GET", string.format("/v1/profiles/user_id:u%d", math.random(1, profiles)))
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_s=%.2f rps=%.0f p50_us=%d p90_us=%d p99_us=%d max_us=%d errors=%d non2xx=%d\n",
        summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
        e.connect + e.read + e.write + e.timeout, e.status))
end
