-- wrk script for Weft's invoke benchmark (used by scripts/bench.sh):
--   WEFT_KEY=wsk_... WEFT_BODY_FILE=entered.json \
--     wrk -t2 -c16 -d10s -s scripts/wrk-invoke.lua http://127.0.0.1:18080/v1/plugins/abandoned-cart/invoke
-- Without WEFT_BODY_FILE it sends plain GETs (the /healthz baseline).
-- Prints one machine-readable RESULT line at the end.

local key = os.getenv("WEFT_KEY")
local body_file = os.getenv("WEFT_BODY_FILE")

if body_file and body_file ~= "" then
    local f = assert(io.open(body_file, "rb"))
    wrk.method = "POST"
    wrk.body = f:read("*a")
    f:close()
    wrk.headers["Content-Type"] = "application/json"
end
if key and key ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. key
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_s=%.2f rps=%.0f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d errors=%d non2xx=%d\n",
        summary.requests,
        summary.duration / 1e6,
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50),
        latency:percentile(90),
        latency:percentile(99),
        latency:percentile(99.9),
        latency.max,
        e.connect + e.read + e.write + e.timeout,
        e.status
    ))
end
