// Switchboard web chat widget.
//
//   <script src="https://support.example.com/chat/web/widget.js" data-channel="web" async></script>
//
// Optional attributes: data-title (header text), data-mode="page" (fill the page instead of a
// floating button). The session token is kept in localStorage, so a reload continues the chat.
// Everything the widget shows is set as text; it never interprets HTML from the network.
(function () {
  "use strict";
  const script = document.currentScript;
  if (!script) return;
  const base = new URL(script.src, location.href).origin;
  const channel = script.dataset.channel;
  const title = script.dataset.title || "Chat with us";
  const asPage = script.dataset.mode === "page";
  const api = `${base}/chat/${encodeURIComponent(channel)}`;
  const storeKey = `switchboard-chat:${api}`;

  const css = `
    :host { all: initial; }
    [hidden] { display: none !important; }
    * { box-sizing: border-box; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; }
    .launcher { position: fixed; right: 20px; bottom: 20px; border: 0; border-radius: 24px; padding: 12px 18px;
      background: #2458d6; color: #fff; cursor: pointer; box-shadow: 0 4px 14px rgba(0,0,0,.2); }
    .panel { position: fixed; right: 20px; bottom: 20px; width: min(380px, calc(100vw - 24px));
      height: min(560px, calc(100vh - 40px)); display: flex; flex-direction: column; background: #fff;
      border: 1px solid #dde1e6; border-radius: 12px; box-shadow: 0 8px 30px rgba(0,0,0,.18); overflow: hidden; color: #1d2329; }
    .panel.page { position: static; width: 100%; height: 100vh; border: 0; border-radius: 0; box-shadow: none; }
    header { display: flex; align-items: center; justify-content: space-between; padding: 10px 14px; background: #2458d6; color: #fff; }
    header button { background: transparent; color: #fff; border: 0; font-size: 18px; cursor: pointer; }
    ol { list-style: none; margin: 0; padding: 12px; flex: 1; overflow: auto; display: flex; flex-direction: column; gap: 8px; background: #f6f7f9; }
    li { max-width: 85%; padding: 8px 11px; border-radius: 12px; white-space: pre-wrap; overflow-wrap: anywhere; }
    li.customer { align-self: flex-end; background: #2458d6; color: #fff; }
    li.bot, li.agent, li.system { align-self: flex-start; background: #fff; border: 1px solid #dde1e6; }
    li.note { align-self: center; background: transparent; color: #66707a; font-size: 12px; }
    li.failed { opacity: .6; }
    .name { display: block; font-size: 11px; color: #66707a; margin-bottom: 2px; }
    .buttons { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 6px; }
    .buttons button, .retry { border: 1px solid #2458d6; background: #fff; color: #2458d6; border-radius: 14px; padding: 4px 10px; cursor: pointer; }
    form { display: flex; gap: 8px; padding: 10px; border-top: 1px solid #dde1e6; }
    textarea { flex: 1; resize: none; border: 1px solid #dde1e6; border-radius: 8px; padding: 7px 9px; height: 40px; }
    form button { border: 0; border-radius: 8px; background: #2458d6; color: #fff; padding: 0 14px; cursor: pointer; }
    .status { font-size: 11px; color: #66707a; padding: 0 12px 6px; min-height: 1em; }
    :focus-visible { outline: 3px solid #ffbf47; outline-offset: 1px; }`;

  const host = document.createElement("div");
  host.setAttribute("data-switchboard-chat", channel);
  const root = host.attachShadow({ mode: "open" });
  root.innerHTML = `
    <button class="launcher" type="button" part="launcher"></button>
    <section class="panel" role="dialog" aria-label="" hidden>
      <header><strong class="title"></strong><button class="close" type="button" aria-label="Close">×</button></header>
      <ol class="log" aria-live="polite"></ol>
      <div class="status" role="status"></div>
      <form><textarea aria-label="Your message" placeholder="Type your message…" maxlength="4000"></textarea><button type="submit">Send</button></form>
    </section>`;
  // A constructed style sheet is not inline style, so a host page's CSP need not allow that.
  if ("adoptedStyleSheets" in root && "replaceSync" in CSSStyleSheet.prototype) {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
    root.adoptedStyleSheets = [sheet];
  } else {
    const style = document.createElement("style");
    style.textContent = css;
    root.prepend(style);
  }
  const $ = (sel) => root.querySelector(sel);
  const launcher = $(".launcher");
  const panel = $(".panel");
  const log = $(".log");
  const input = $("textarea");
  const status = $(".status");
  launcher.textContent = title;
  $(".title").textContent = title;
  panel.setAttribute("aria-label", title);
  if (asPage) {
    panel.classList.add("page");
    launcher.hidden = true;
    $(".close").hidden = true;
  }

  let token = null;
  try { token = JSON.parse(localStorage.getItem(storeKey) || "null"); } catch (_) { token = null; }
  let events = null;
  let lastSeq = 0;
  const shown = new Set();

  // Text goes in as runs of at most 256 characters: the browser lays out one long unbroken
  // run (a reply of 60 KB with no space) in time that grows faster than its length.
  function appendText(node, text) {
    for (let start = 0; start < text.length; ) {
      let end = Math.min(start + 256, text.length);
      if (end < text.length && /[\ud800-\udbff]/.test(text[end - 1])) end += 1;
      const run = document.createElement("span");
      run.textContent = text.slice(start, end);
      node.append(run);
      start = end;
    }
  }

  function entryNode(e) {
    const li = document.createElement("li");
    li.className = ["customer", "bot", "agent", "system"].includes(e.from) ? e.from : "system";
    if (e.from === "agent" && e.name) {
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = e.name;
      li.append(name);
    }
    appendText(li, e.text);
    if (e.buttons && e.buttons.length) {
      const row = document.createElement("div");
      row.className = "buttons";
      for (const b of e.buttons) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = b.label;
        button.addEventListener("click", () => send(b.payload, b.label));
        row.append(button);
      }
      li.append(row);
    }
    return li;
  }

  function show(e) {
    if (shown.has(e.seq)) return;
    shown.add(e.seq);
    lastSeq = Math.max(lastSeq, e.seq);
    // A pending copy of our own message is replaced by the stored one.
    if (e.from === "customer") {
      const pending = log.querySelector("li.pending");
      if (pending) pending.remove();
    }
    log.append(entryNode(e));
    log.scrollTop = log.scrollHeight;
  }

  async function call(method, path, body) {
    const headers = {};
    if (token) headers.Authorization = "Bearer " + token;
    if (body) headers["Content-Type"] = "application/json";
    const r = await fetch(api + path, { method, headers, body: body && JSON.stringify(body) });
    const data = await r.json().catch(() => null);
    if (!r.ok) {
      const err = new Error((data && data.error && data.error.message) || r.statusText);
      err.status = r.status;
      throw err;
    }
    return data;
  }

  async function ensureSession() {
    if (token) return;
    const s = await call("POST", "/sessions");
    token = s.token;
    localStorage.setItem(storeKey, JSON.stringify(token));
  }

  function listen() {
    if (!token || events) return;
    events = new EventSource(`${api}/events?token=${encodeURIComponent(token)}`);
    events.addEventListener("entry", (m) => show(JSON.parse(m.data)));
    const es = events;
    es.onopen = () => { status.textContent = ""; };
    es.onerror = () => {
      status.textContent = "Reconnecting…";
      // Closed for good (the server answered with an error): fetch what was missed, listen anew.
      if (es.readyState === EventSource.CLOSED && events === es) {
        events = null;
        setTimeout(resume, 2000);
      }
    };
  }

  async function resume() {
    if (!token) return;
    try {
      const t = await call("GET", "/transcript");
      for (const e of t.entries) show(e);
      listen();
    } catch (e) {
      if (e.status === 401) {
        // The server no longer knows this session: start afresh on the next message.
        token = null;
        localStorage.removeItem(storeKey);
      } else {
        status.textContent = "Could not load the conversation; retrying…";
        setTimeout(resume, 3000);
      }
    }
  }

  function randomId() {
    const a = new Uint8Array(12);
    crypto.getRandomValues(a);
    return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function send(text, label, id, renewed) {
    text = text.trim();
    if (!text) return;
    const clientId = id || randomId();
    const pending = document.createElement("li");
    pending.className = "customer pending";
    pending.textContent = label || text;
    log.append(pending);
    log.scrollTop = log.scrollHeight;
    try {
      await ensureSession();
      listen();
      const body = { text, client_message_id: clientId };
      if (label) body.label = label;
      await call("POST", "/messages", body);
      status.textContent = "";
    } catch (e) {
      if (e.status === 401 && !renewed) {
        // The session ended (unused too long): start a new one and send there.
        token = null;
        localStorage.removeItem(storeKey);
        if (events) { events.close(); events = null; }
        pending.remove();
        return send(text, label, id, true);
      }
      pending.classList.remove("pending");
      pending.classList.add("failed");
      const retry = document.createElement("button");
      retry.className = "retry";
      retry.type = "button";
      retry.textContent = "Not sent — retry";
      retry.addEventListener("click", () => { pending.remove(); send(text, label, clientId); });
      status.replaceChildren(retry);
    }
  }

  function open() {
    panel.hidden = false;
    launcher.hidden = true;
    input.focus();
  }

  launcher.addEventListener("click", open);
  $(".close").addEventListener("click", () => { panel.hidden = true; launcher.hidden = false; });
  $("form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value;
    input.value = "";
    send(text);
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("form").requestSubmit();
    }
  });

  // Floating, it stays on top of the page and on screen whatever the page does: the highest
  // stacking order (set through the CSSOM, which a page's CSP allows), and a child of <html>,
  // since a `transform` on <body> would otherwise make "fixed" mean "fixed to the body".
  if (asPage) {
    (document.body || document.documentElement).append(host);
  } else {
    for (const [k, v] of [["position", "fixed"], ["z-index", "2147483647"], ["top", "0"], ["left", "0"]]) {
      host.style.setProperty(k, v, "important");
    }
    document.documentElement.append(host);
  }
  if (asPage || token) open();
  resume();
})();
