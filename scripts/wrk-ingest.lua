-- wrk script for Weft's ingestion benchmark (used by scripts/bench.sh):
--   WEFT_WRITE_KEY=wwk_... WEFT_BATCH=1 WEFT_PROFILES=100000 \
--     wrk -t2 -c32 -d10s -s scripts/wrk-ingest.lua http://127.0.0.1:18080
-- WEFT_BATCH=1 posts single events to /v1/track; N > 1 posts N events per /v1/batch.
-- Every event has a unique messageId (thread id + counter), a userId drawn from
-- WEFT_PROFILES users, and the shape of a real `Product Added` call.
-- Prints one machine-readable RESULT line (events/s counts events, not requests).

local key = os.getenv("WEFT_WRITE_KEY") or ""
local batch = tonumber(os.getenv("WEFT_BATCH") or "1")
local profiles = tonumber(os.getenv("WEFT_PROFILES") or "100000")
local threads = {}
local counter = 0


function setup(thread)
    thread:set("tid", #threads + 1)
    table.insert(threads, thread)
end

function init(args)
    counter = 0
    math.randomseed(tid * 7919 + os.time())
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    -- Basic auth with the write key as user name and an empty password, as Segment's libraries send.
    wrk.headers["Authorization"] = "Basic " .. base64(key .. ":")
end

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function base64(data)
    return ((data:gsub(".", function(x)
        local r, b = "", x:byte()
        for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
        return r
    end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
        if #x < 6 then return "" end
        local c = 0
        for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
        return b64chars:sub(c + 1, c + 1)
    end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

local function event()
    counter = counter + 1
    local user = math.random(1, profiles)
    return string.format(
        '{"type":"track","event":"Product Added","userId":"u%d","messageId":"w%d-%d",' ..
        '"properties":{"cart_id":"c%d","product_id":"sku-%d","name":"Ao dai lua","price":450000,"currency":"VND"},' ..
        '"context":{"library":{"name":"wrk"},"timezone":"Asia/Ho_Chi_Minh"}}',
        user, tid, counter, user, counter % 500)
end

function request()
    if batch <= 1 then
        return wrk.format(nil, "/v1/track", nil, event())
    end
    local parts = {}
    for i = 1, batch do parts[i] = event() end
    return wrk.format(nil, "/v1/batch", nil, '{"batch":[' .. table.concat(parts, ",") .. ']}')
end

function done(summary, latency, requests)
    local e = summary.errors
    local secs = summary.duration / 1e6
    io.write(string.format(
        "RESULT requests=%d events=%d duration_s=%.2f rps=%.0f eps=%.0f p50_us=%d p90_us=%d p99_us=%d max_us=%d errors=%d non2xx=%d\n",
        summary.requests, summary.requests * batch, secs, summary.requests / secs,
        summary.requests * batch / secs,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
        e.connect + e.read + e.write + e.timeout, e.status))
end
