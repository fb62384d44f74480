-- wrk script for the personalize benchmark (used by scripts/bench.sh personalize):
--   WEFT_WRITE_KEY=wwk_... WEFT_PROFILES=100000 \
--     wrk -t2 -c32 -d10s --latency -s scripts/wrk-personalize.lua http://127.0.0.1:18080
-- Each request is POST /v1/personalize?writeKey=... (Content-Type text/plain, as a browser
-- sends it) for a random user u1..uN (WEFT_PROFILES) with a product page's context and
-- two placements, `hero` and `recs`.
--
-- Fixed rate: WEFT_RATE=5000 WEFT_CONNS=32 [WEFT_THREADS=2] paces every connection with
-- delay() so that the aggregate approximates WEFT_RATE requests/s: each connection waits
-- about WEFT_CONNS/WEFT_RATE s before its next request, and once a second each thread
-- scales that wait by how far its last second's count was from its share of the rate (so
-- the response time does not eat into the rate). wrk's latency excludes the wait. When the
-- server cannot keep up the wait shrinks to nothing and the achieved rate (rps= in the
-- RESULT line) falls short of the target.
-- Warm-up: WEFT_SEQUENTIAL=1 walks the users in order (thread t of T takes t, t+T, ...,
-- after WEFT_SEQ_OFFSET) instead of at random, so a pass touches as many distinct profiles
-- as it can and the next pass can go on where it stopped.
-- Prints one machine-readable RESULT line.

local key = os.getenv("WEFT_WRITE_KEY") or "wwk_bench"
local profiles = tonumber(os.getenv("WEFT_PROFILES") or "100000")
local rate = tonumber(os.getenv("WEFT_RATE") or "0")
local conns = tonumber(os.getenv("WEFT_CONNS") or "0")
local nthreads = tonumber(os.getenv("WEFT_THREADS") or "2")
local sequential = os.getenv("WEFT_SEQUENTIAL") == "1"
local seq_offset = tonumber(os.getenv("WEFT_SEQ_OFFSET") or "0")
local threads = {}

function setup(thread)
    thread:set("tid", #threads + 1)
    table.insert(threads, thread)
end

local counter = 0
local path = "/v1/personalize?writeKey=" .. key

function init(args)
    math.randomseed(tid * 104729 + os.time())
    counter = 0
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "text/plain;charset=UTF-8"
end

local pages = {
    { "product", "/p/%s", "Áo dài lụa %s" },
    { "category", "/c/ao-dai", "Áo dài" },
    { "home", "/", "Trang chủ" },
    { "cart", "/cart", "Giỏ hàng" },
}
local devices = { "mobile", "mobile", "desktop", "tablet" }

function request()
    counter = counter + 1
    local user
    if sequential then
        user = (seq_offset + (counter - 1) * nthreads + tid - 1) % profiles + 1
    else
        user = math.random(1, profiles)
    end
    local sku = "sku-" .. math.random(1, 49)
    local page = pages[math.random(1, #pages)]
    local p = string.format(page[2], sku)
    local body = string.format(
        '{"anonymousId":"a-%d","userId":"u%d","page":{"url":"https://shop.example.vn%s","path":"%s",' ..
        '"referrer":"https://zalo.me/","title":"%s","page_type":"%s","locale":"vi-VN","device_type":"%s",' ..
        '"campaign":{"source":"zalo","medium":"oa","name":"tet"},' ..
        '"attributes":{"sku":"%s","cart":[{"sku":"sku-3","quantity":1}]}},"placements":["hero","recs"]}',
        user, user, p, p, string.format(page[3], sku), page[1], devices[math.random(1, #devices)], sku)
    return wrk.format(nil, path, nil, body)
end

-- Pacing (only when WEFT_RATE and WEFT_CONNS are set).
local base_ms = (rate > 0 and conns > 0) and (conns * 1000.0 / rate) or nil
local adj = 1.0
local sec = nil
local full = false
local sent = 0

local function clamp(v, lo, hi)
    if v < lo then return lo elseif v > hi then return hi else return v end
end

if base_ms then
    function delay()
        local now = os.time()
        if now ~= sec then
            -- The first window is partial: adjust only after a whole second.
            if full and sent > 0 then
                local share = rate / nthreads
                -- Too many last second: wait longer; too few: wait less.
                adj = clamp(adj * clamp(sent / share, 0.67, 1.5), 0.02, 4.0)
            end
            full = sec ~= nil
            sec = now
            sent = 0
        end
        sent = sent + 1
        local d = base_ms * adj
        local whole = math.floor(d)
        -- wrk takes whole milliseconds: round up with the probability of the fraction.
        if math.random() < d - whole then whole = whole + 1 end
        return whole
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    local secs = summary.duration / 1e6
    io.write(string.format(
        "RESULT requests=%d duration_s=%.2f rps=%.0f target_rps=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d errors=%d non2xx=%d\n",
        summary.requests, secs, summary.requests / secs, rate,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
        latency.max, e.connect + e.read + e.write + e.timeout, e.status))
end
