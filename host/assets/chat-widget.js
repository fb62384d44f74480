/*
 * Weft web chat widget, served at GET /v1/chat/widget.js. Embed it with one tag:
 *
 *   <script src="https://weft.example.com/v1/chat/widget.js" data-write-key="wwk_…" async></script>
 *
 * Optional attributes: data-title, data-locale, data-open="true", data-anonymous-id,
 * data-color (accent colour). The protocol is in docs/webchat.md. All DOM lives in an
 * open shadow root on <div id="weft-chat">; every element a test drives has `data-weft`.
 * Server data is only ever rendered with textContent/createElement, never as HTML.
 */
(function () {
  "use strict";

  if (window.WeftChat || document.getElementById("weft-chat")) return; // loaded twice

  const WIDGET_PATH = "/v1/chat/widget.js";
  const script =
    document.currentScript || document.querySelector('script[src*="' + WIDGET_PATH + '"]');
  const cfg = (script && script.dataset) || {};
  if (!script || !cfg.writeKey) {
    console.warn("Weft chat: no <script data-write-key> found; the widget is not loaded.");
    return;
  }

  // --- Configuration --------------------------------------------------------------

  const loadedAt = performance.now();
  const src = new URL(script.src, location.href);
  const basePath = src.pathname.slice(0, src.pathname.indexOf(WIDGET_PATH)); // "" or a proxy prefix
  const locale = cfg.locale || navigator.language || "en";
  const anonymousId = cfg.anonymousId || storedAnonymousId();
  const wsUrl =
    (src.protocol === "https:" ? "wss://" : "ws://") + src.host + basePath + "/v1/chat/ws" +
    "?writeKey=" + encodeURIComponent(cfg.writeKey) +
    "&anonymousId=" + encodeURIComponent(anonymousId);
  const MAX_FRAME_BYTES = 8192; // the server closes the socket on larger client frames
  const MAX_TEXT_CHARS = 2000; // the server refuses longer messages (the socket stays open)
  const MAX_BACKOFF_MS = 30000;

  const STRINGS = {
    en: {
      open: "Open chat", close: "Close chat", input: "Type a message…", send: "Send",
      connecting: "Connecting…", reconnecting: "Reconnecting…", unavailable: "Chat is unavailable",
      waiting_for_agent: "Waiting for an agent…", with_agent: "An agent joined",
      with_agent_named: "Chatting with {agent}", resolved: "Conversation resolved",
      rate: "How would you rate this conversation?", too_long: "That message is too long.",
      file: "Download file", map: "Open map", unread: "New message",
    },
    vi: {
      open: "Mở khung chat", close: "Đóng khung chat", input: "Nhập tin nhắn…", send: "Gửi",
      connecting: "Đang kết nối…", reconnecting: "Đang kết nối lại…", unavailable: "Không thể trò chuyện",
      waiting_for_agent: "Đang chờ nhân viên hỗ trợ…", with_agent: "Nhân viên đã tham gia",
      with_agent_named: "Đang trò chuyện với {agent}", resolved: "Cuộc trò chuyện đã kết thúc",
      rate: "Bạn đánh giá cuộc trò chuyện này thế nào?", too_long: "Tin nhắn quá dài.",
      file: "Tải tệp xuống", map: "Xem bản đồ", unread: "Tin nhắn mới",
    },
  };
  const T = STRINGS[locale.slice(0, 2).toLowerCase()] || STRINGS.en;

  /** The visitor's id, shared with Weft's analytics snippet through localStorage. */
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

  // Unique across reloads too: the server ignores a client_id it has already stored.
  let counter = 0;
  const newClientId = () =>
    "w" + Date.now().toString(36) + "-" + (++counter) + "-" + Math.random().toString(36).slice(2, 8);

  // --- DOM helpers ----------------------------------------------------------------

  /** createElement with attributes ("text" sets textContent, "on…" adds a listener). */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c != null) node.append(c); // strings become text nodes
    return node;
  }

  /** An http(s) URL as a string, or null for anything else (javascript:, data:, garbage). */
  function safeUrl(u) {
    try {
      const url = new URL(String(u), location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  const CSS = `
    :host { all: initial; }
    * { box-sizing: border-box; }
    .root { --accent: #2563eb; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111827; }
    button { font: inherit; cursor: pointer; }
    .launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483646; width: 56px; height: 56px;
      border: 0; border-radius: 50%; background: var(--accent); color: #fff; box-shadow: 0 4px 14px rgba(0,0,0,.25);
      display: flex; align-items: center; justify-content: center; }
    .launcher svg { width: 28px; height: 28px; fill: currentColor; }
    .badge { position: absolute; top: 4px; right: 4px; width: 12px; height: 12px; border-radius: 50%;
      background: #ef4444; border: 2px solid #fff; }
    .panel { position: fixed; right: 20px; bottom: 88px; z-index: 2147483647; width: 370px;
      max-width: calc(100vw - 24px); height: 560px; max-height: calc(100vh - 108px); background: #fff;
      border-radius: 14px; box-shadow: 0 8px 30px rgba(0,0,0,.25); display: flex; flex-direction: column; overflow: hidden; }
    [hidden] { display: none !important; }
    .header { background: var(--accent); color: #fff; padding: 10px 12px 10px 16px; display: flex; align-items: center; gap: 8px; }
    .header .titles { flex: 1; min-width: 0; }
    .title { font-weight: 600; font-size: 16px; }
    .state { font-size: 12px; opacity: .9; }
    .state:empty { display: none; }
    .close { border: 0; background: transparent; color: inherit; font-size: 22px; line-height: 1; padding: 4px 8px; border-radius: 6px; }
    .close:hover, .close:focus-visible { background: rgba(255,255,255,.2); }
    .messages { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column; gap: 8px; background: #f9fafb; }
    .msg { max-width: 82%; padding: 8px 12px; border-radius: 14px; white-space: pre-wrap; overflow-wrap: anywhere;
      align-self: flex-start; background: #fff; border: 1px solid #e5e7eb; }
    .msg[data-from="visitor"] { align-self: flex-end; background: var(--accent); color: #fff; border-color: transparent; }
    .msg[data-from="system"] { align-self: center; background: transparent; border: 0; color: #6b7280; font-size: 12px; text-align: center; }
    .msg[data-pending="true"] { opacity: .6; }
    .msg > * + * { margin-top: 6px; }
    .who { font-size: 11px; font-weight: 600; color: #6b7280; }
    .msg a:not(.card-button) { color: inherit; }
    .media { display: block; max-width: 100%; border-radius: 8px; }
    .carousel { display: flex; gap: 8px; overflow-x: auto; max-width: 100%; padding-bottom: 4px; white-space: normal; }
    .card { flex: 0 0 200px; border: 1px solid #e5e7eb; border-radius: 10px; overflow: hidden; background: #fff; color: #111827; white-space: normal; }
    .card img { display: block; width: 100%; height: 110px; object-fit: cover; }
    .card .body { padding: 8px 10px; }
    .card .sub { color: #6b7280; font-size: 13px; }
    .card-button { display: block; width: 100%; border: 0; border-top: 1px solid #e5e7eb; background: #fff;
      color: var(--accent); padding: 8px; text-align: center; text-decoration: none; }
    .card-button:disabled { color: #9ca3af; cursor: default; }
    .quick { display: flex; flex-wrap: wrap; gap: 6px; padding: 8px 12px 0; background: #f9fafb; }
    .quick:empty, .rating:empty { display: none; }
    .quick button, .rating button { border: 1px solid var(--accent); color: var(--accent); background: #fff;
      border-radius: 16px; padding: 5px 12px; }
    .quick button:hover, .rating button:hover { background: var(--accent); color: #fff; }
    .rating { padding: 8px 12px 0; background: #f9fafb; display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
    .rating .q { width: 100%; font-size: 13px; color: #374151; }
    .rating button { min-width: 34px; padding: 5px 8px; }
    .error { background: #fef2f2; color: #b91c1c; font-size: 13px; padding: 6px 12px; }
    .error:empty { display: none; }
    .composer { display: flex; gap: 8px; padding: 10px 12px; border-top: 1px solid #e5e7eb; background: #fff; }
    .input { flex: 1; resize: none; border: 1px solid #d1d5db; border-radius: 10px; padding: 8px 10px;
      font: inherit; font-size: 16px; max-height: 120px; color: inherit; }
    .input:focus { outline: 2px solid var(--accent); outline-offset: -1px; }
    .send { border: 0; border-radius: 10px; background: var(--accent); color: #fff; padding: 0 14px; font-weight: 600; }
    button:focus-visible { outline: 2px solid #111827; outline-offset: 2px; }
    @media (max-width: 480px) {
      .panel { inset: 0; width: 100%; max-width: none; height: 100%; max-height: none; border-radius: 0; }
    }`;

  // --- The UI ---------------------------------------------------------------------

  const ui = {};
  const host = h("div", { id: "weft-chat", style: "all: initial !important" }); // page CSS must not style it
  const shadow = host.attachShadow({ mode: "open" });

  function buildUi() {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H8l-5 4V5a2 2 0 0 1 1-2z");
    svg.append(path);

    ui.badge = h("span", { class: "badge", "data-weft": "badge", hidden: true, title: T.unread });
    ui.launcher = h("button", {
      type: "button", class: "launcher", "data-weft": "launcher", "aria-label": T.open,
      "aria-expanded": "false", "aria-controls": "weft-panel", onclick: () => (isOpen() ? closePanel() : openPanel(true)),
    }, svg, ui.badge);
    ui.state = h("div", { class: "state", "data-weft": "state", role: "status", "aria-live": "polite" });
    ui.messages = h("div", { class: "messages", "data-weft": "messages", role: "log", "aria-live": "polite" });
    ui.quick = h("div", { class: "quick", "data-weft": "quick-replies" });
    ui.rating = h("div", { class: "rating", "data-weft": "rating-row", role: "group", "aria-label": T.rate });
    ui.error = h("div", { class: "error", "data-weft": "error", role: "alert" });
    ui.input = h("textarea", {
      class: "input", "data-weft": "input", rows: 1, placeholder: T.input, "aria-label": T.input,
      onkeydown: (e) => {
        // Enter sends, Shift+Enter is a new line; never send in the middle of IME composition.
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
          e.preventDefault();
          sendTyped();
        }
      },
    });
    ui.send = h("button", { type: "button", class: "send", "data-weft": "send", "aria-label": T.send, text: T.send, onclick: sendTyped });
    ui.panel = h("div", {
      id: "weft-panel", class: "panel", "data-weft": "panel", role: "dialog", "aria-label": cfg.title || "Chat", hidden: true,
      onkeydown: (e) => { if (e.key === "Escape") { closePanel(); ui.launcher.focus(); } },
    },
      h("div", { class: "header" },
        h("div", { class: "titles" }, h("div", { class: "title", text: cfg.title || "Chat" }), ui.state),
        h("button", { type: "button", class: "close", "data-weft": "close", "aria-label": T.close, text: "×", onclick: closePanel })),
      ui.messages, ui.quick, ui.rating, ui.error,
      h("div", { class: "composer" }, ui.input, ui.send));

    const root = h("div", { class: "root" }, ui.panel, ui.launcher);
    if (cfg.color) root.style.setProperty("--accent", cfg.color); // invalid colours are ignored by CSS
    shadow.append(h("style", { text: CSS }), root);
  }

  const isOpen = () => !ui.panel.hidden;

  function openPanel(focus) {
    ui.panel.hidden = false;
    ui.launcher.setAttribute("aria-expanded", "true");
    ui.launcher.setAttribute("aria-label", T.close);
    ui.badge.hidden = true;
    ensureConnected(); // the socket opens on first use, not on every page view
    scrollDown();
    if (focus) ui.input.focus();
  }

  function closePanel() {
    ui.panel.hidden = true;
    ui.launcher.setAttribute("aria-expanded", "false");
    ui.launcher.setAttribute("aria-label", T.open);
  }

  const scrollDown = () => { ui.messages.scrollTop = ui.messages.scrollHeight; };

  // --- Rendering messages -------------------------------------------------------------

  /** One content item as a DOM node (null when there is nothing to show). */
  function renderItem(item) {
    if (typeof item === "string") return h("div", { text: item });
    if (!item || typeof item !== "object") return null;
    const [kind, v] = Object.entries(item)[0] || [];
    switch (kind) {
      case "Text": return h("div", { text: String(v) });
      case "Choices": return v && v.prompt ? h("div", { text: v.prompt }) : null; // options go to quick replies
      case "Card": return renderCard(v);
      case "Carousel": return Array.isArray(v) ? h("div", { class: "carousel" }, ...v.map(renderCard)) : null;
      case "Image": case "Video": case "Audio": case "File": return renderMedia(kind, v || {});
      case "Location": {
        if (!v || typeof v !== "object") return null;
        const lat = Number(v.latitude), lng = Number(v.longitude);
        const ok = Number.isFinite(lat) && Number.isFinite(lng);
        return h("div", null, v.address ? h("div", { text: String(v.address) }) : null,
          ok ? h("a", { href: "https://maps.google.com/?q=" + lat + "," + lng, target: "_blank", rel: "noopener", text: T.map }) : null);
      }
      default: return null; // Template, Raw and unknown kinds: nothing a visitor can read
    }
  }

  function renderMedia(kind, m) {
    const url = safeUrl(m.url);
    const label = m.caption || m.filename || "";
    if (!url) return label ? h("div", { text: label }) : null;
    let media;
    if (kind === "Image") {
      media = h("img", { class: "media", src: url, alt: label, loading: "lazy" });
      media.addEventListener("load", scrollDown);
    } else if (kind === "Video" || kind === "Audio") {
      media = h(kind.toLowerCase(), { class: "media", src: url, controls: true, preload: "metadata" });
    } else {
      return h("a", { href: url, target: "_blank", rel: "noopener", download: m.filename || true, text: m.filename || m.caption || T.file });
    }
    return h("div", null, media, m.caption ? h("div", { text: m.caption }) : null);
  }

  function renderCard(c) {
    if (!c || typeof c !== "object") return null;
    const img = safeUrl(c.image_url);
    const card = h("div", { class: "card", "data-weft": "card" },
      img ? h("img", { src: img, alt: "", loading: "lazy" }) : null,
      h("div", { class: "body" }, h("strong", { text: c.title || "" }), c.subtitle ? h("div", { class: "sub", text: c.subtitle }) : null));
    for (const b of Array.isArray(c.buttons) ? c.buttons : []) card.append(renderButton(b || {}));
    return card;
  }

  function renderButton(b) {
    const label = String(b.label || "");
    const [kind, v] = Object.entries(b.action || {})[0] || [];
    const attrs = { class: "card-button", "data-weft": "card-button", text: label };
    if (kind === "Phone") {
      return h("a", { ...attrs, href: "tel:" + String(v).replace(/[^0-9+*#,;]/g, "") });
    }
    const url = kind === "Url" ? safeUrl(v) : null;
    let onclick = null;
    if (kind === "Postback") onclick = () => submit({ type: "postback", value: String(v), label }, label);
    else if (kind === "Say") onclick = () => submit({ type: "message", text: String(v) }, String(v));
    else if (url) onclick = () => window.open(url, "_blank", "noopener");
    return h("button", { ...attrs, type: "button", "data-value": kind === "Postback" ? v : null, disabled: !onclick, onclick });
  }

  /** A Unix-ms time for a tooltip (an invalid data-locale must not break rendering). */
  function when(at) {
    try { return new Date(at).toLocaleString(locale); } catch (e) { return new Date(at).toLocaleString(); }
  }

  /** A message bubble (from a server frame, or a visitor's own pending one). */
  function messageNode(m) {
    const from = ["visitor", "bot", "agent", "system"].includes(m.from) ? m.from : "system";
    const node = h("div", {
      class: "msg", "data-weft": "message", "data-from": from, "data-id": m.id != null ? m.id : null,
      title: m.at ? when(m.at) : null,
    });
    if (from === "agent" && m.agent) node.append(h("div", { class: "who", text: m.agent }));
    for (const item of Array.isArray(m.content) ? m.content : []) {
      const child = renderItem(item);
      if (child) node.append(child);
    }
    return node;
  }

  const shown = new Map(); // message id -> element, to de-duplicate

  /** Appends a server message unless its id is already shown; returns the node or null. */
  function addMessage(m) {
    const id = m.id != null ? String(m.id) : null;
    if (id && shown.has(id)) return null;
    const node = messageNode(m);
    if (id) shown.set(id, node);
    ui.messages.append(node);
    return node;
  }

  function choicesOf(m) {
    const c = (Array.isArray(m.content) ? m.content : []).find((i) => i && i.Choices);
    return c && Array.isArray(c.Choices.options) ? c.Choices.options : [];
  }

  function setQuickReplies(options) {
    ui.quick.replaceChildren(...options.map((o) => {
      const value = String(o.value != null ? o.value : o.label);
      const label = String(o.label || value);
      return h("button", {
        type: "button", "data-weft": "quick-reply", "data-value": value, text: label,
        onclick: () => submit({ type: "postback", value, label }, label),
      });
    }));
    scrollDown(); // the list just got shorter or taller
  }

  function showRating(scale) {
    const [lo, hi] = scale === "nps" ? [0, 10] : [1, 5];
    const buttons = [];
    for (let n = lo; n <= hi; n++) {
      buttons.push(h("button", {
        type: "button", "data-weft": "rating", "data-value": n, "aria-label": n + " / " + hi, text: String(n),
        onclick: () => { ui.rating.replaceChildren(); submit({ type: "rating", value: n }, n + " / " + hi); },
      }));
    }
    ui.rating.replaceChildren(h("div", { class: "q", text: T.rate }), ...buttons);
    scrollDown();
  }

  // --- Status line ----------------------------------------------------------------------

  let conv = { state: "", agent: "" };

  function renderStatus() {
    // data-state: the conversation's state, or "connecting" / "unavailable" while not ready.
    let key = conv.state;
    let text = T[key] || "";
    if (stopped) {
      key = "unavailable";
      text = T.unavailable;
    } else if (!ready && (ws || retryTimer)) {
      key = "connecting";
      text = attempt ? T.reconnecting : T.connecting;
    } else if (key === "with_agent" && conv.agent) {
      text = T.with_agent_named.replace("{agent}", conv.agent);
    }
    ui.state.textContent = text;
    ui.state.dataset.state = key;
  }

  const showError = (text) => { ui.error.textContent = text || ""; };

  // --- Connection -------------------------------------------------------------------

  let ws = null;          // the current socket
  let ready = false;      // `ready` received on it: messages may be sent
  let stopped = false;    // refused with 1008: never reconnect
  let attempt = 0;        // reconnects since the last `ready`, for the backoff
  let retryTimer = 0;
  const pending = [];     // {frame, el}: sent or queued, not yet acknowledged, oldest first
  const listeners = {};

  function emit(name, frame) {
    for (const fn of listeners[name] || []) {
      try { fn(frame); } catch (e) { console.error("Weft chat: a " + name + " callback failed", e); }
    }
  }

  function sendFrame(frame) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
  }

  let pageStart = loadedAt;
  let referrer = document.referrer;
  const pageContext = () => ({
    url: location.href, referrer, title: document.title,
    time_on_page_ms: Math.round(performance.now() - pageStart),
  });

  function connect() {
    if (ws || stopped) return;
    clearTimeout(retryTimer);
    retryTimer = 0;
    let sock;
    try {
      sock = new WebSocket(wsUrl);
    } catch (e) { // e.g. ws: from an https page (mixed content): retrying cannot help
      stopped = true;
      showError(T.unavailable);
      renderStatus();
      return;
    }
    ws = sock;
    renderStatus();
    sock.onopen = () => sendFrame({ type: "hello", page: pageContext(), locale });
    sock.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      if (frame && typeof frame.type === "string") handleFrame(frame);
    };
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      ready = false;
      if (ev.code === 1008) {
        // Wrong key, bad anonymousId or origin not allowed: retrying cannot help.
        stopped = true;
        if (!ui.error.textContent) showError(ev.reason || T.unavailable);
      } else {
        const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** attempt);
        attempt++;
        retryTimer = setTimeout(connect, delay);
      }
      renderStatus();
    };
  }

  /** Connects unless a socket is open or a reconnect is already scheduled (keep the backoff). */
  function ensureConnected() {
    if (!ws && !retryTimer) connect();
  }

  // Back online: do not wait for the rest of the backoff.
  window.addEventListener("online", () => { if (retryTimer) connect(); });

  function handleFrame(f) {
    switch (f.type) {
      case "ready": {
        ready = true;
        attempt = 0;
        showError("");
        ui.rating.replaceChildren();
        // Replace the list with the history, then keep our unacknowledged messages after it.
        ui.messages.replaceChildren();
        shown.clear();
        const history = Array.isArray(f.history) ? f.history : [];
        history.forEach(addMessage);
        for (const p of pending) ui.messages.append(p.el);
        const last = history[history.length - 1];
        setQuickReplies(last && last.from !== "visitor" && !pending.length ? choicesOf(last) : []);
        const lastAgent = history.filter((m) => m.from === "agent" && m.agent).pop();
        conv = { state: f.state || "", agent: lastAgent ? lastAgent.agent : "" };
        renderStatus();
        scrollDown();
        // Resend everything not yet acknowledged; the server ignores a client_id it already has.
        for (const p of pending) sendFrame(p.frame);
        break;
      }
      case "ack": {
        const i = pending.findIndex((p) => p.frame.client_id === f.client_id);
        if (i < 0) break;
        const [p] = pending.splice(i, 1);
        p.el.removeAttribute("data-pending");
        const id = f.id != null ? String(f.id) : null;
        if (id && shown.has(id) && shown.get(id) !== p.el) p.el.remove(); // already shown (history or echo)
        else if (id) { p.el.dataset.id = id; shown.set(id, p.el); }
        break;
      }
      case "message": {
        const node = addMessage(f);
        if (!node) break;
        if (f.from === "visitor") setQuickReplies([]);
        else {
          setQuickReplies(choicesOf(f));
          if (!isOpen()) ui.badge.hidden = false;
        }
        scrollDown();
        break;
      }
      case "state":
        conv = { state: f.state || "", agent: f.agent || "" };
        renderStatus();
        break;
      case "expect":
        if (f.kind === "rating") showRating(f.scale);
        else ui.rating.replaceChildren();
        // A hint for on-screen keyboards.
        ui.input.setAttribute("inputmode", { number: "decimal", email: "email", phone: "tel" }[f.kind] || "text");
        break;
      case "error":
        showError(f.message || f.code || "Error");
        break;
    }
    emit(f.type, f);
  }

  /** Shows a visitor action at once (pending until acked) and sends or queues its frame. */
  function submit(frame, text) {
    if (stopped) return false;
    frame.client_id = newClientId();
    const tooLong = typeof frame.text === "string" && [...frame.text].length > MAX_TEXT_CHARS;
    if (tooLong || new TextEncoder().encode(JSON.stringify(frame)).length > MAX_FRAME_BYTES) {
      showError(T.too_long);
      return false;
    }
    showError("");
    const el = messageNode({ from: "visitor", content: [{ Text: text }] });
    el.dataset.pending = "true";
    pending.push({ frame, el });
    ui.messages.append(el);
    setQuickReplies([]);
    scrollDown();
    if (ready) sendFrame(frame); // otherwise it goes out after the next `ready`
    else ensureConnected();
    return true;
  }

  function sendTyped() {
    const text = ui.input.value.trim();
    if (!text) return;
    if (submit({ type: "message", text }, text)) ui.input.value = "";
    ui.input.focus();
  }

  // --- Page tracking for single-page sites ---------------------------------------------

  let lastUrl = location.href;
  function onNavigate() {
    setTimeout(() => { // let the router update the title first
      if (location.href === lastUrl) return; // popstate + hashchange fire together
      referrer = lastUrl;
      lastUrl = location.href;
      pageStart = performance.now();
      if (ready) sendFrame({ type: "page", page: pageContext() });
    }, 0);
  }
  window.addEventListener("popstate", onNavigate);
  window.addEventListener("hashchange", onNavigate);
  const pushState = history.pushState;
  history.pushState = function () {
    const result = pushState.apply(this, arguments);
    onNavigate();
    return result;
  };

  // --- Start ------------------------------------------------------------------------------

  window.WeftChat = {
    open: () => openPanel(true),
    close: closePanel,
    /** Sends `text` as the visitor; false when it cannot be sent. */
    send: (text) => (String(text || "").trim() ? submit({ type: "message", text: String(text).trim() }, String(text).trim()) : false),
    /** on("message"|"ready"|"state"|"error"|"expect"|"ack", fn(frame)); returns an unsubscribe function. */
    on(name, fn) {
      (listeners[name] = listeners[name] || []).push(fn);
      return () => { listeners[name] = listeners[name].filter((f) => f !== fn); };
    },
  };

  buildUi(); // detached until <body> exists, so the API above works at once
  renderStatus();
  function mount() {
    document.body.append(host);
    if (cfg.open === "true") openPanel(false);
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
