/*
 * Weft edge personalization for web pages, served at GET /v1/personalize.js. Mark the
 * slots, then add one tag:
 *
 *   <div data-weft-placement="hero">Default hero (shown until, or unless, Weft answers)</div>
 *   <div data-weft-placement="recs" data-weft-max-items="3"></div>
 *   <script src="https://weft.example.com/v1/personalize.js" data-write-key="wwk_…" async></script>
 *
 * Optional script attributes: data-user-id, data-anonymous-id (default: the visitor id
 * shared with the chat widget, `weft.anonymousId` in localStorage), data-endpoint (default:
 * this script's origin + /v1/personalize), data-style="none" (no built-in card CSS).
 * Page context comes from the URL (utm_* → campaign), the title, the referrer, and <body>:
 * data-weft-page-type="product" → page_type; every other data-weft-page-* attribute goes
 * into page.attributes, camelCased (data-weft-page-product-id → productId), JSON-parsed
 * when it parses (data-weft-page-cart='[{"sku":"sku-3","quantity":1}]' → an array).
 *
 * All placements go out in one POST (text/plain, so no CORS preflight). Each decision
 * first fires a bubbling, cancelable `weft:decision` event on its element (detail: the
 * decision); preventDefault() there and the page renders it itself. Otherwise the element's
 * children are replaced by a small card (content.headline/body/image/link/link_text and the
 * items' payload name/image/url/price); a decision with nothing to show leaves the element
 * alone. data-weft-variant and data-weft-source are set on the element either way.
 * Decisions are cached in sessionStorage per placement and path for their ttl_ms. On any
 * error the page's own content stays and the error goes to console.warn. Protocol:
 * docs/personalize.md. Server data is only ever rendered with textContent/attributes,
 * never as HTML; only http(s) URLs become links or images.
 *
 * window.weftPersonalize.refresh() re-runs (returns a Promise); it also re-runs by itself
 * after history.pushState and popstate (single-page sites).
 */
(function () {
  "use strict";

  if (window.weftPersonalize) return; // loaded twice

  const SCRIPT_PATH = "/v1/personalize.js";
  const script =
    document.currentScript || document.querySelector('script[src*="' + SCRIPT_PATH + '"]');
  const cfg = (script && script.dataset) || {};
  if (!script || !cfg.writeKey) {
    console.warn("Weft personalize: no <script data-write-key> found; nothing is personalized.");
    return;
  }

  // --- Configuration --------------------------------------------------------------

  const MAX_PLACEMENTS = 20; // per request (the server refuses more)
  const CACHE_PREFIX = "weft.pz:";
  const src = new URL(script.src, location.href);
  const basePath = src.pathname.slice(0, src.pathname.indexOf(SCRIPT_PATH)); // "" or a proxy prefix
  const endpoint = new URL(cfg.endpoint || src.origin + basePath + "/v1/personalize", location.href);
  endpoint.searchParams.set("writeKey", cfg.writeKey);
  const userId = cfg.userId || null;
  const anonymousId = cfg.anonymousId || storedAnonymousId();
  const who = (userId || "") + "|" + anonymousId; // a cached decision is only for the same visitor
  const lang = (document.documentElement.lang || navigator.language || "en").slice(0, 2).toLowerCase();
  const MORE = lang === "vi" ? "Xem thêm" : "Learn more"; // a link without link_text

  /** The visitor's id, shared with the chat widget and Weft's analytics snippet. */
  function storedAnonymousId() {
    const KEY = "weft.anonymousId";
    let id = null;
    try {
      id = localStorage.getItem(KEY);
      if (id && id[0] === '"') id = JSON.parse(id); // tolerate a JSON-encoded value
    } catch (e) { /* storage blocked, or not JSON: make a new id */ }
    if (typeof id !== "string" || !id.trim()) {
      id = randomId();
      try { localStorage.setItem(KEY, id); } catch (e) { /* private mode: id lives for this page */ }
    }
    return id;
  }

  function randomId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  // --- Page context ---------------------------------------------------------------

  let referrer = document.referrer || null;

  function pageContext() {
    const body = document.body;
    const params = new URLSearchParams(location.search);
    const campaign = {};
    for (const [utm, key] of [["utm_source", "source"], ["utm_medium", "medium"],
      ["utm_campaign", "name"], ["utm_term", "term"], ["utm_content", "content"]]) {
      const v = params.get(utm);
      if (v) campaign[key] = v;
    }
    const attributes = {};
    for (const a of (body ? Array.from(body.attributes) : [])) {
      if (!a.name.startsWith("data-weft-page-") || a.name === "data-weft-page-type") continue;
      const key = a.name.slice("data-weft-page-".length).replace(/-([a-z0-9])/g, (_, c) => c.toUpperCase());
      if (key) attributes[key] = parseValue(a.value);
    }
    return {
      url: location.href,
      path: location.pathname,
      referrer,
      title: document.title || null,
      page_type: (body && body.getAttribute("data-weft-page-type")) || null,
      locale: navigator.language || document.documentElement.lang || null,
      device_type: deviceType(),
      campaign,
      attributes,
    };
  }

  /** A data attribute's value: JSON when it parses (numbers, lists, objects), else the text. */
  function parseValue(v) {
    try { return JSON.parse(v); } catch (e) { return v; }
  }

  function deviceType() {
    const ua = navigator.userAgent || "";
    if (/iPad|Tablet|PlayBook|Silk|Kindle/i.test(ua) || (/Android/i.test(ua) && !/Mobile/i.test(ua))) return "tablet";
    if (/Macintosh/.test(ua) && navigator.maxTouchPoints > 1) return "tablet"; // iPadOS asking for desktop sites
    if (/Mobi|iPhone|iPod|Android|Windows Phone|BlackBerry|Opera Mini/i.test(ua)) return "mobile";
    const coarse = window.matchMedia && matchMedia("(pointer: coarse)").matches;
    if (coarse) return Math.min(window.innerWidth, screen.width || Infinity) < 768 ? "mobile" : "tablet";
    return "desktop";
  }

  // --- Cache (sessionStorage, per placement and path) -----------------------------------

  const cacheKey = (placement) => CACHE_PREFIX + location.pathname + "#" + placement;

  function cached(placement) {
    try {
      const raw = sessionStorage.getItem(cacheKey(placement));
      if (!raw) return null;
      const entry = JSON.parse(raw);
      if (entry && entry.who === who && entry.expires > Date.now() && entry.decision) return entry.decision;
      sessionStorage.removeItem(cacheKey(placement));
    } catch (e) { /* storage blocked or garbage: ask the server */ }
    return null;
  }

  function remember(decision) {
    const ttl = Number(decision.ttl_ms) || 0;
    if (ttl <= 0) return;
    try {
      sessionStorage.setItem(cacheKey(decision.placement),
        JSON.stringify({ who, expires: Date.now() + ttl, decision }));
    } catch (e) { /* full or blocked: no cache */ }
  }

  // --- Rendering ------------------------------------------------------------------------

  /** createElement with attributes ("text" sets textContent); null/false values are skipped. */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, String(v));
    }
    for (const c of children) if (c != null) node.append(c); // strings become text nodes
    return node;
  }

  /** An http(s) URL as a string, or null for anything else (javascript:, data:, garbage). */
  function safeUrl(u) {
    if (typeof u !== "string" || !u.trim()) return null;
    try {
      const url = new URL(u, location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  const str = (v) => (typeof v === "string" && v.trim() ? v : typeof v === "number" ? String(v) : null);

  /** The text of untrusted HTML, parsed in an inert document (no scripts, no loads). */
  function htmlText(html) {
    try {
      const doc = new DOMParser().parseFromString(String(html), "text/html");
      doc.querySelectorAll("script, style, template, noscript").forEach((n) => n.remove());
      return str((doc.body.textContent || "").replace(/\s+/g, " ").trim());
    } catch (e) {
      return null;
    }
  }

  function price(v, currency) {
    if (typeof v !== "number" || !isFinite(v)) return str(v);
    try {
      return new Intl.NumberFormat("vi-VN", { style: "currency", currency: str(currency) || "VND" }).format(v);
    } catch (e) { // an unknown currency code
      return new Intl.NumberFormat("vi-VN").format(v) + (str(currency) ? " " + currency : "");
    }
  }

  /** The card for a decision, or null when it has nothing to show. */
  function card(d) {
    const c = d.content && typeof d.content === "object" ? d.content : {};
    const headline = str(c.headline) || str(c.title);
    const bodyText = str(c.body) || str(c.text) || (c.html != null ? htmlText(c.html) : null);
    const image = safeUrl(c.image);
    const link = safeUrl(c.link);
    const items = (Array.isArray(d.items) ? d.items : []).map(itemNode).filter(Boolean);
    if (!headline && !bodyText && !image && !link && !items.length) return null;
    return h("div", { class: "weft-card", "data-weft": "card" },
      image ? h("img", { class: "weft-image", "data-weft": "image", src: image, alt: str(c.image_alt) || headline || "" }) : null,
      headline ? h("div", { class: "weft-headline", "data-weft": "headline", text: headline }) : null,
      bodyText ? h("p", { class: "weft-body", "data-weft": "body", text: bodyText }) : null,
      link ? h("a", { class: "weft-link", "data-weft": "link", href: link, text: str(c.link_text) || MORE }) : null,
      items.length ? h("ul", { class: "weft-items", "data-weft": "items" }, ...items) : null);
  }

  function itemNode(item) {
    if (!item || typeof item !== "object") return null;
    const p = item.payload && typeof item.payload === "object" ? item.payload : {};
    const id = str(item.id) || str(p.id);
    const name = str(p.name) || str(p.title) || id;
    if (!name) return null;
    const image = safeUrl(p.image);
    const url = safeUrl(p.url);
    const cost = p.price != null ? price(p.price, p.currency) : null;
    const inner = [
      image ? h("img", { class: "weft-item-image", src: image, alt: name, loading: "lazy" }) : null,
      h("span", { class: "weft-item-name", text: name }),
      cost ? h("span", { class: "weft-item-price", text: cost }) : null,
    ];
    return h("li", { class: "weft-item", "data-weft": "item", "data-weft-item-id": id },
      url ? h("a", { class: "weft-item-link", href: url }, ...inner) : h("span", { class: "weft-item-link" }, ...inner));
  }

  const CSS = `
    .weft-card { display: flex; flex-direction: column; gap: 8px; }
    .weft-image { display: block; max-width: 100%; height: auto; border-radius: 8px; }
    .weft-headline { font-size: 1.25em; font-weight: 600; }
    .weft-body { margin: 0; }
    .weft-items { list-style: none; margin: 0; padding: 0; display: grid; gap: 12px;
      grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); }
    .weft-item-link { display: flex; flex-direction: column; gap: 4px; color: inherit; text-decoration: none; }
    .weft-item-image { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: 6px; }
    .weft-item-price { font-weight: 600; }
  `;
  function addStyle() {
    if (cfg.style === "none" || document.getElementById("weft-personalize-style")) return;
    const style = h("style", { id: "weft-personalize-style", text: CSS });
    document.head ? document.head.prepend(style) : document.documentElement.append(style); // page CSS wins
  }

  /** Tells the page, then renders unless a `weft:decision` listener called preventDefault(). */
  function apply(el, d) {
    try {
      el.setAttribute("data-weft-variant", String(d.variant == null ? "" : d.variant));
      el.setAttribute("data-weft-source", String(d.source == null ? "" : d.source));
      const ev = new CustomEvent("weft:decision", { bubbles: true, cancelable: true, detail: d });
      if (!el.dispatchEvent(ev)) return; // the page renders it itself
      const node = card(d);
      if (!node) return; // nothing to show: keep the page's content
      el.textContent = "";
      el.append(node);
    } catch (e) {
      console.warn("Weft personalize: could not render placement " + d.placement + ":", e);
    }
  }

  // --- Asking --------------------------------------------------------------------------

  /** POSTs one request; returns its decisions, or null after a warning. */
  async function ask(placements) {
    let resp;
    try {
      resp = await fetch(endpoint.href, {
        method: "POST",
        headers: { "Content-Type": "text/plain;charset=UTF-8" }, // a "simple" request: no preflight
        body: JSON.stringify({ anonymousId, userId, page: pageContext(), placements }),
        credentials: "omit",
        mode: "cors",
      });
    } catch (e) {
      // Also how a wrong write key or an origin missing from allowed_origins looks from a
      // page: those refusals carry no CORS headers, so the browser hides them.
      console.warn("Weft personalize: request failed (network, write key or allowed_origins?): " +
        (e && e.message ? e.message : e));
      return null;
    }
    let body = null;
    try { body = await resp.json(); } catch (e) { /* not JSON */ }
    if (!resp.ok) {
      const err = (body && body.error) || {};
      console.warn("Weft personalize: " + resp.status + " " + (err.code || "error") + ": " +
        (err.message || resp.statusText || "request refused"));
      return null;
    }
    if (!body || !Array.isArray(body.decisions)) {
      console.warn("Weft personalize: unexpected answer (no decisions)");
      return null;
    }
    return body.decisions;
  }

  let generation = 0;

  async function run() {
    const gen = ++generation;
    const path = location.pathname;
    const byId = new Map(); // placement id -> elements
    const maxItems = new Map();
    for (const el of document.querySelectorAll("[data-weft-placement]")) {
      const id = el.getAttribute("data-weft-placement").trim();
      if (!id) continue;
      if (!byId.has(id)) byId.set(id, []);
      byId.get(id).push(el);
      const n = parseInt(el.getAttribute("data-weft-max-items"), 10);
      if (n > 0 && !maxItems.has(id)) maxItems.set(id, n);
    }
    if (!byId.size) return;
    addStyle();

    const wanted = [];
    for (const [id, els] of byId) {
      const d = cached(id);
      if (d) els.forEach((el) => apply(el, d));
      else wanted.push(maxItems.has(id) ? { id, max_items: maxItems.get(id) } : id);
    }
    for (let i = 0; i < wanted.length; i += MAX_PLACEMENTS) {
      const decisions = await ask(wanted.slice(i, i + MAX_PLACEMENTS));
      if (!decisions) continue;
      for (const d of decisions) {
        if (!d || typeof d.placement !== "string") continue;
        if (location.pathname === path) remember(d);
        // A newer run (the visitor navigated meanwhile) owns the elements now.
        if (gen === generation) (byId.get(d.placement) || []).forEach((el) => el.isConnected && apply(el, d));
      }
    }
  }

  /** Re-runs; never rejects. */
  function refresh() {
    return run().catch((e) => console.warn("Weft personalize:", e));
  }

  // --- Single-page sites -----------------------------------------------------------------

  let lastUrl = location.href;
  function onNavigate() {
    setTimeout(() => { // let the router update the DOM and title first
      if (location.href === lastUrl) return;
      referrer = lastUrl;
      lastUrl = location.href;
      refresh();
    }, 0);
  }
  window.addEventListener("popstate", onNavigate);
  const pushState = history.pushState;
  history.pushState = function () {
    const result = pushState.apply(this, arguments);
    onNavigate();
    return result;
  };

  // --- Start ------------------------------------------------------------------------------

  window.weftPersonalize = { refresh };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", refresh);
  else refresh();
})();
