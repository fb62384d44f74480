#!/usr/bin/env node
// The Node.js baselines of the personalize benchmark (`bash scripts/bench.sh personalize`):
// POST /v1/personalize with plugins/tier-personalize's decision logic as JavaScript run in a
// `node:vm` context.
//
//   target/release/examples/personalize_native --print-settings > /tmp/pz-settings.json
//   node scripts/personalize-vm.js --port 18091 --mode fresh --profiles 100000 --settings /tmp/pz-settings.json
//
// --mode fresh:  a new context per request (vm.createContext + runInContext of the logic,
//                compiled once with new vm.Script): isolation comparable to Weft's fresh
//                Wasm instance per request.
// --mode reused: one context created at start; its `decide` function called per request.
//
// The profiles live in a Map outside the vm: --profiles synthetic users u1..uN, the same
// data the benchmark ingests into Weft (keep in sync with examples/personalize_native.rs
// and examples/loadgen.rs personalize-setup): tier `gold` when n % 10 == 0, `silver` when
// n % 10 is 1..3, none otherwise; audience `vip` when n % 7 == 0.
//
// As Weft does, the server prepares the catalog once at start, outside the vm: each entry
// checked as Weft checks it when the settings are saved and turned into a frozen typed
// record {id, score (f32), category, tags}, and its whole object (keys sorted, as Weft
// encodes it) kept by id as the payload. The logic gets what the Wasm plugin gets: the
// profile (traits and audiences), the placements with their constraints as JSON text (which
// it parses on every request, as the plugin does), and the catalog beside the request, lent
// by reference (no per-request JSON.parse of the catalog). It answers the items' ids and
// scores; the server attaches each item's catalog object as its payload, as Weft does, and
// JSON.stringify of the answer writes it. The answer has the shape of Weft's
// (docs/personalize.md); the write key is accepted and not checked. One process, one
// thread (Node's usual deployment unit; Weft and the native server use both cores).
'use strict';

const http = require('node:http');
const fs = require('node:fs');
const vm = require('node:vm');

function arg(flag, dflt) {
    const i = process.argv.indexOf(flag);
    return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const port = Number(arg('--port', '18091'));
const mode = arg('--mode', 'fresh');
const nProfiles = Number(arg('--profiles', '100000'));
const settingsPath = arg('--settings');
if (mode !== 'fresh' && mode !== 'reused') {
    console.error('--mode must be fresh or reused');
    process.exit(2);
}
if (!settingsPath) {
    console.error('usage: node scripts/personalize-vm.js --port N --mode fresh|reused --profiles N --settings FILE\n' +
        '(write FILE with: target/release/examples/personalize_native --print-settings > FILE)');
    process.exit(2);
}

// The decision logic: plugins/tier-personalize's README, "Decision logic (exact, for ports)".
// `decide(input, candidates)`: `candidates` are the typed catalog records, lent by the
// server; an item is {id, score} and the server attaches the payload.
const LOGIC = String.raw`
'use strict';
const KNOWN_TTL_MS = 60000;
const ANONYMOUS_TTL_MS = 300000;
const OWN_TIER_BOOST = 1.0;
const TIER_TAG = 'tier:';
const CONTENT = {
    gold: { discount_percent: 10, headline: 'Ưu đãi riêng cho thành viên Vàng', tier: 'gold' },
    silver: { discount_percent: 5, headline: 'Ưu đãi cho thành viên Bạc', tier: 'silver' },
    other: { headline: 'Sản phẩm dành cho bạn', tier: 'member' },
    anonymous: { headline: 'Sản phẩm nổi bật', tier: 'anonymous' },
};
const VARIANT = { gold: 'tier-gold', silver: 'tier-silver', other: 'tier-default', anonymous: 'anonymous' };

function invalid(message) {
    const e = new Error(message);
    e.code = 'invalid-input';
    return e;
}

function isObject(v) {
    return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// Whether s, ASCII case-insensitively, is lower (lower-case ASCII), from offset 'from' of s.
function eqIgnoreAsciiCase(s, from, lower) {
    if (s.length - from !== lower.length) return false;
    for (let i = 0; i < lower.length; i++) {
        let c = s.charCodeAt(from + i);
        if (c >= 65 && c <= 90) c += 32;
        if (c !== lower.charCodeAt(i)) return false;
    }
    return true;
}

function tierOf(profile) {
    if (!profile) return 'anonymous';
    const traits = isObject(profile.traits) ? profile.traits : {};
    // A string equal to gold or silver ignoring ASCII case; anything else is other.
    const t = traits.tier;
    if (typeof t === 'string') {
        if (eqIgnoreAsciiCase(t, 0, 'gold')) return 'gold';
        if (eqIgnoreAsciiCase(t, 0, 'silver')) return 'silver';
    }
    return 'other';
}

// The ranking score of c for a visitor of tier, or null when c is not for them: an item
// without tier: tags (prefix case-sensitive) is for everyone at its score; one with tier:
// tags only for a visitor whose tier one of their values names (ASCII case-insensitively),
// at score + 1.0 (f32), so tier:bronze alone is for no one.
function eligibleScore(c, tier) {
    const mine = tier === 'gold' || tier === 'silver' ? tier : null;
    let tagged = false;
    let match = false;
    const tags = c.tags;
    for (let i = 0; i < tags.length; i++) {
        const t = tags[i];
        if (!t.startsWith(TIER_TAG)) continue;
        tagged = true;
        if (mine !== null && eqIgnoreAsciiCase(t, TIER_TAG.length, mine)) match = true;
    }
    if (!tagged) return c.score;
    return match ? Math.fround(c.score + OWN_TIER_BOOST) : null;
}

function audienceBanner(placement, constraints, audiences) {
    if (!('audience_banners' in constraints)) return null;
    const entries = constraints.audience_banners;
    if (!Array.isArray(entries)) throw invalid('placement ' + placement + ': constraints.audience_banners is not an array');
    let chosen = null;
    for (let i = 0; i < entries.length; i++) {
        const at = 'placement ' + placement + ': constraints.audience_banners[' + i + '] ';
        const e = entries[i];
        if (!isObject(e)) throw invalid(at + 'is not an object');
        if (typeof e.audience !== 'string') throw invalid(at + 'has no string \u0060audience\u0060');
        if (typeof e.variant !== 'string') throw invalid(at + 'has no string \u0060variant\u0060');
        if ('content' in e && !isObject(e.content)) throw invalid(at + 'has a \u0060content\u0060 that is not an object');
        if (chosen === null && audiences.includes(e.audience)) chosen = e;
    }
    return chosen;
}

// Ids compared as strings: UTF-16 order, the same as Rust's byte order for the ASCII ids
// of the catalog (and ids are unique, so no further tie-break is needed).
function byteCompare(a, b) {
    return a < b ? -1 : a > b ? 1 : 0;
}

function decideOne(placement, tier, audiences, candidates) {
    let constraints;
    try { constraints = JSON.parse(placement.constraints); } catch (_) { constraints = {}; }
    if (!isObject(constraints)) constraints = {};
    const banner = audienceBanner(placement.id, constraints, audiences);
    const excluded = Array.isArray(constraints.exclude)
        ? constraints.exclude.filter((v) => typeof v === 'string') : [];
    const ranked = [];
    for (let i = 0; i < candidates.length; i++) {
        const c = candidates[i];
        if (excluded.includes(c.id)) continue;
        const score = eligibleScore(c, tier);
        if (score === null) continue;
        ranked.push({ id: c.id, score });
    }
    ranked.sort((x, y) => (y.score - x.score) || byteCompare(x.id, y.id));
    if (ranked.length > placement.max_items) ranked.length = placement.max_items;
    let variant, content, reason;
    if (banner) {
        variant = banner.variant;
        content = banner.content === undefined ? {} : banner.content;
        reason = 'audience=' + banner.audience;
    } else {
        variant = VARIANT[tier];
        content = CONTENT[tier];
        reason = 'tier=' + VARIANT[tier];
    }
    return {
        placement_id: placement.id, variant_id: variant, experiment_id: null, content, items: ranked,
        ttl_ms: tier === 'anonymous' ? ANONYMOUS_TTL_MS : KNOWN_TTL_MS, reason,
    };
}

function decide(input, candidates) {
    const tier = tierOf(input.profile);
    const audiences = input.profile ? input.profile.audiences : [];
    return input.placements.map((p) => decideOne(p, tier, audiences, candidates));
}
`;

// Object keys sorted byte-wise (UTF-8) at every level, as Weft (serde_json) encodes the
// settings' objects.
function sortKeys(v) {
    if (Array.isArray(v)) return v.map(sortKeys);
    if (v === null || typeof v !== 'object') return v;
    const out = {};
    const keys = Object.keys(v).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    for (const k of keys) out[k] = sortKeys(v[k]);
    return out;
}

// A candidate id, category or tag as Weft requires it: a string of 1 to 128 bytes.
function label(v, field, at) {
    if (typeof v !== 'string' || v.length === 0 || Buffer.byteLength(v) > 128) {
        throw new Error(at + ': `' + field + '` must be a string of 1 to 128 bytes');
    }
    return v;
}

// The catalog, prepared once as Weft prepares it when the settings are saved: the typed
// records lent to the logic, and each entry's whole object by id for the payloads.
function prepareCatalog(entries) {
    if (entries === undefined || entries === null) entries = [];
    if (!Array.isArray(entries)) throw new Error('candidates must be an array of objects');
    const records = [];
    const payloads = new Map();
    entries.forEach((c, i) => {
        const at = 'candidates[' + i + ']';
        if (c === null || typeof c !== 'object' || Array.isArray(c)) throw new Error(at + ': not an object');
        const id = label(c.id, 'id', at);
        if (payloads.has(id)) throw new Error(at + ': id `' + id + '` appears twice');
        const s = c.score;
        if (s !== undefined && s !== null && typeof s !== 'number') throw new Error(at + ': `score` must be a number');
        const category = c.category === undefined || c.category === null ? null : label(c.category, 'category', at);
        let tags = [];
        if (c.tags !== undefined && c.tags !== null) {
            if (!Array.isArray(c.tags) || c.tags.length > 32) throw new Error(at + ': `tags` must be an array of at most 32 strings');
            tags = c.tags.map((t) => label(t, 'tags[]', at));
        }
        records.push(Object.freeze({
            id, score: Math.fround(typeof s === 'number' ? s : 0), category, tags: Object.freeze(tags),
        }));
        payloads.set(id, sortKeys(c));
    });
    return { records: Object.freeze(records), payloads };
}

// Settings and profiles, outside the vm.
const settings = JSON.parse(fs.readFileSync(settingsPath, 'utf8'));
const placements = new Map();
for (const p of settings.placements) {
    placements.set(p.id, {
        id: p.id,
        kind: p.kind,
        max_items: p.max_items === undefined ? 10 : p.max_items,
        constraints: JSON.stringify(sortKeys(p.constraints === undefined ? {} : p.constraints)),
    });
}
const catalog = prepareCatalog(settings.candidates);
const profiles = new Map();
for (let n = 1; n <= nProfiles; n++) {
    const traits = {};
    if (n % 10 === 0) traits.tier = 'gold';
    else if (n % 10 >= 1 && n % 10 <= 3) traits.tier = 'silver';
    traits.vip = n % 7 === 0;
    profiles.set('u' + n, { profile_id: 'p' + n, traits, audiences: n % 7 === 0 ? ['vip'] : [] });
}

// The two ways of running the logic; the catalog goes in by reference either way.
let run;
if (mode === 'fresh') {
    const script = new vm.Script(LOGIC + '\n;decide(input, candidates);', { filename: 'tier-personalize.js' });
    run = (input) => script.runInContext(vm.createContext({ input, candidates: catalog.records }));
} else {
    const ctx = vm.createContext({});
    new vm.Script(LOGIC, { filename: 'tier-personalize.js' }).runInContext(ctx);
    const decideInCtx = ctx.decide;
    run = (input) => decideInCtx(input, catalog.records);
}

let nextId = 1;

function send(res, status, body) {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
}

function fail(res, status, code, message) {
    send(res, status, { error: { code, message } });
}

// An item as Weft answers it: the f32 score printed shortest, the catalog object as payload.
function itemOut(i) {
    return { id: i.id, score: f32Json(i.score), payload: catalog.payloads.get(i.id) };
}

function handle(res, body) {
    let req;
    try { req = JSON.parse(body); } catch (e) { return fail(res, 400, 'invalid_json', e.message); }
    if (req === null || typeof req !== 'object' || Array.isArray(req)) return fail(res, 400, 'invalid_json', 'not an object');
    const userId = typeof req.userId === 'string' ? req.userId : null;
    if (userId === null && typeof req.anonymousId !== 'string') {
        return fail(res, 400, 'missing_identity', 'anonymousId or userId is required');
    }
    const asked = req.placements;
    if (!Array.isArray(asked) || asked.length === 0 || asked.length > 20) {
        return fail(res, 400, 'invalid_placements', '1 to 20 placements');
    }
    const list = [];
    const seen = new Set();
    for (const a of asked) {
        const id = typeof a === 'string' ? a : a && a.id;
        const config = placements.get(id);
        if (!config) return fail(res, 400, 'unknown_placement', 'no placement `' + id + '`');
        if (seen.has(id)) return fail(res, 400, 'invalid_placements', '`' + id + '` twice');
        seen.add(id);
        const max = a && typeof a === 'object' && typeof a.max_items === 'number'
            ? Math.min(a.max_items, config.max_items) : config.max_items;
        list.push({ id: config.id, kind: config.kind, max_items: max, constraints: config.constraints });
    }
    const profile = userId === null ? null : profiles.get(userId) || null;
    const input = {
        profile: profile && { profile_id: profile.profile_id, traits: profile.traits, audiences: profile.audiences },
        page: isPlainObject(req.page) ? req.page : {},
        placements: list,
    };
    let decisions;
    try {
        decisions = run(input);
    } catch (e) {
        return fail(res, 500, 'decision_failed', String(e && e.message));
    }
    send(res, 200, {
        request_id: 'pz_' + (nextId++).toString(16).padStart(20, '0'),
        decisions: decisions.map((d) => ({
            placement: d.placement_id, variant: d.variant_id, experiment_id: d.experiment_id,
            content: d.content,
            items: d.items.map(itemOut),
            ttl_ms: d.ttl_ms, source: 'plugin', reason: d.reason,
        })),
    });
}

// The shortest decimal that reads back as the same f32, as Weft prints the plugin's f32
// scores (0.9, not 0.8999999761581421); the few distinct scores are remembered.
const f32Texts = new Map();
function f32Json(x) {
    let y = f32Texts.get(x);
    if (y !== undefined) return y;
    y = x;
    for (let p = 1; p <= 9; p++) {
        const t = Number(x.toPrecision(p));
        if (Math.fround(t) === x) { y = t; break; }
    }
    if (f32Texts.size < 65536) f32Texts.set(x, y);
    return y;
}

function isPlainObject(v) {
    return v !== null && typeof v === 'object' && !Array.isArray(v);
}

const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/healthz') {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        return res.end('ok');
    }
    if (req.method !== 'POST' || !req.url.startsWith('/v1/personalize')) {
        return fail(res, 404, 'not_found', 'no route');
    }
    const chunks = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (c) => {
        size += c.length;
        if (size > 16 * 1024) tooLarge = true;
        else chunks.push(c);
    });
    req.on('end', () => {
        if (tooLarge) return fail(res, 413, 'body_too_large', 'the body is over 16 KiB');
        handle(res, Buffer.concat(chunks).toString('utf8'));
    });
});
server.keepAliveTimeout = 65000;
server.listen(port, '127.0.0.1', () => {
    console.error(`personalize-vm (${mode}) on 127.0.0.1:${port} with ${nProfiles} profiles`);
});
