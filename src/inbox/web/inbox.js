// Switchboard inbox: the agent's page. Plain JavaScript, no build step.
//
// Safety rule: text from customers (and anything else from the API) reaches the page only
// through textContent or attribute setters, never innerHTML. Email HTML is shown in a
// sandboxed frame served under its own restrictive policy.
"use strict";

const $ = (id) => document.getElementById(id);
const VIEWS = {
  mine: { status: "assigned", assignee: "me" },
  queued: { status: "queued", order: "oldest" },
  bot: { status: "bot" },
  snoozed: { status: "snoozed" },
  resolved: { status: "resolved" },
  all: {},
};
const EVENT_TYPES = [
  "conversation_created", "message_received", "message_queued", "delivery_changed",
  "status_changed", "assignee_changed", "bot_decided", "note_added", "message_edited", "message_deleted",
  "channel_unreachable", "reachable_again", "labels_changed", "priority_changed",
  "contacts_merged", "agent_changed", "sla_due_soon", "sla_breached",
];

const state = {
  me: null,
  csrf: "",
  view: "queued",
  cursor: null,
  current: null, // the open conversation's detail
  team: new Map(),
  canned: [],
  queued: 0,
  events: null,
  lastEventId: null,
  refreshList: null,
  refreshConversation: null,
};

class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body, headers) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET") init.headers["X-CSRF-Token"] = state.csrf;
  const r = await fetch("/api/v1" + path, init);
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (r.status === 401 && path !== "/session") {
    showSignIn("Your sign-in ended; please sign in again.");
  }
  if (!r.ok) {
    throw new ApiFailure(r.status, (data && data.error && data.error.message) || r.statusText);
  }
  return data;
}

// Direction overrides, isolates and invisible characters (U+202E turns "nimda" into "admin"
// on screen) are shown as what they are, never obeyed: nobody can pose as someone else.
const HIDDEN_CONTROLS = /[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g;

function visible(text) {
  return String(text).replace(HIDDEN_CONTROLS,
    (c) => "[U+" + c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0") + "]");
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = visible(v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// Long unbroken text (a run of one letter with no space) makes the browser's line breaker
// slow down faster than linearly: 100 KB of "A" took 20 s to lay out. Short text nodes keep
// each run small, and a long message shows its first part until the agent asks for all of it.
const RUN_CHARS = 256;
const COLLAPSED_CHARS = 4000;
const expanded = new Set();

function clip(text, chars) {
  return text.length > chars ? text.slice(0, chars) + "…" : text;
}

function textRuns(node, text) {
  if (text.length <= RUN_CHARS) {
    node.textContent = visible(text);
    return node;
  }
  let start = 0;
  while (start < text.length) {
    let end = Math.min(start + RUN_CHARS, text.length);
    // Never split a surrogate pair.
    if (end < text.length && /[\ud800-\udbff]/.test(text[end - 1])) end += 1;
    node.append(el("span", { text: text.slice(start, end) }));
    start = end;
  }
  return node;
}

// A message's text: in full when short, else its start and a "Show all" that stays open
// across re-renders (`key` names the message and its text: an edit collapses it again).
function messageText(text, key) {
  const box = el("div", { class: "text" });
  if (text.length <= COLLAPSED_CHARS || expanded.has(key)) {
    if (text.length > COLLAPSED_CHARS) box.classList.add("long");
    return textRuns(box, text);
  }
  textRuns(box, text.slice(0, COLLAPSED_CHARS) + "…");
  const more = el("button", { type: "button", class: "quiet show-all",
    text: `Show all (${Math.ceil(text.length / 1000)}K characters)` });
  more.addEventListener("click", () => {
    expanded.add(key);
    box.replaceWith(messageText(text, key));
  });
  return el("div", {}, box, more);
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d";
}

const clock = (ms) => new Date(ms).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
const agentName = (id) => (state.team.get(id) || {}).name || "agent " + id;

// ---- sign-in -------------------------------------------------------------------------

function showSignIn(message) {
  if (state.events) state.events.close();
  state.events = null;
  state.me = null;
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("token").focus();
}

async function signIn(ev) {
  ev.preventDefault();
  $("signin-error").textContent = "";
  try {
    const s = await api("POST", "/session", { token: $("token").value.trim() });
    $("token").value = "";
    await start(s);
  } catch (e) {
    $("signin-error").textContent =
      e.status === 401 ? "That token is not valid." : "Sign-in failed: " + e.message;
  }
}

async function signOut() {
  try {
    await api("DELETE", "/session");
  } finally {
    showSignIn("Signed out.");
  }
}

// ---- start ---------------------------------------------------------------------------

async function start(session) {
  state.me = session.agent;
  state.csrf = session.csrf;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("me").textContent = visible(state.me.name);
  $("presence").value = state.me.presence || "offline";
  $("notify").hidden = !("Notification" in window) || Notification.permission !== "default";
  const [team, channels, canned] = await Promise.all([
    api("GET", "/team"), api("GET", "/channels"), api("GET", "/canned"),
  ]);
  state.team = new Map(team.map((a) => [a.id, a]));
  state.canned = canned;
  const sel = $("f-channel");
  sel.replaceChildren(el("option", { value: "", text: "All channels" }));
  for (const c of channels) sel.append(el("option", { value: c.id, text: c.id }));
  fillAssign();
  connectEvents();
  const m = location.hash.match(/^#c\/(\d+)$/);
  await selectView(state.view);
  if (m) await openConversation(Number(m[1]));
}

function fillAssign() {
  const sel = $("a-assign");
  sel.replaceChildren(el("option", { value: "", text: "Assign to…" }));
  for (const a of state.team.values()) {
    sel.append(el("option", { value: a.id, text: a.name + (a.presence === "online" ? " ●" : "") }));
  }
}

// ---- live updates --------------------------------------------------------------------

function connectEvents() {
  if (state.events) state.events.close();
  // EventSource resumes by itself with Last-Event-ID after a dropped connection, but gives up
  // for good when an attempt is answered with an error (a restarting daemon): then start a
  // new stream that resumes from the last event seen.
  const resume = state.lastEventId ? "?last_event_id=" + encodeURIComponent(state.lastEventId) : "";
  const es = new EventSource("/api/v1/events" + resume);
  state.events = es;
  es.onopen = () => {
    setLive(true);
    state.refreshList();
    state.refreshConversation();
  };
  es.onerror = () => {
    setLive(false);
    if (es.readyState === EventSource.CLOSED && state.events === es) {
      state.events = null;
      reconnectLater();
    }
  };
  for (const type of EVENT_TYPES) {
    es.addEventListener(type, (m) => {
      if (m.lastEventId) state.lastEventId = m.lastEventId;
      onEvent(JSON.parse(m.data));
    });
  }
}

// Retries every 2 s while the daemon is away; an ended sign-in shows the sign-in form instead.
function reconnectLater() {
  setTimeout(async () => {
    if (!state.me || state.events) return;
    try {
      await api("GET", "/me");
      connectEvents();
    } catch (e) {
      if (e.status !== 401) reconnectLater();
    }
  }, 2000);
}

function setLive(on) {
  const live = $("live");
  live.textContent = on ? "live" : "reconnecting…";
  live.className = "live " + (on ? "on" : "off");
}

function onEvent(e) {
  state.refreshList();
  if (e.type === "agent_changed") {
    api("GET", "/team").then((team) => {
      state.team = new Map(team.map((a) => [a.id, a]));
      fillAssign();
    });
  }
  if (e.type === "status_changed" && e.to === "queued") notifyQueued(e);
  if (state.current && e.conversation === state.current.conversation.id) {
    state.refreshConversation();
  }
}

function notifyQueued(e) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  if (document.hasFocus()) return;
  const n = new Notification("Waiting for a person", {
    body: "Conversation " + e.conversation + ": " + e.reason,
    tag: "sb-" + e.conversation,
  });
  n.onclick = () => {
    window.focus();
    openConversation(e.conversation);
  };
}

// ---- the list ------------------------------------------------------------------------

function listQuery(cursor) {
  const p = new URLSearchParams(VIEWS[state.view]);
  const q = $("q").value.trim();
  const channel = $("f-channel").value;
  const label = $("f-label").value.trim();
  if (q) p.set("q", q);
  if (channel) p.set("channel", channel);
  if (label) p.set("label", label);
  if (cursor) p.set("cursor", cursor);
  return "/conversations?" + p.toString();
}

async function selectView(view) {
  state.view = view;
  for (const b of document.querySelectorAll("#queues > button")) {
    b.setAttribute("aria-current", b.dataset.view === view ? "true" : "false");
  }
  await loadList();
}

async function loadList(more) {
  const page = await api("GET", listQuery(more ? state.cursor : null));
  state.cursor = page.next_cursor || null;
  const ul = $("conversations");
  if (!more) ul.replaceChildren();
  for (const c of page.items) ul.append(listItem(c, page.contacts));
  $("more").hidden = !state.cursor;
  $("list-empty").hidden = ul.children.length > 0;
  showCounts(page.counts);
  if (!more) refreshMine();
}

async function refreshMine() {
  const mine = await api("GET", "/conversations?status=assigned&assignee=me&limit=200");
  $("queues").querySelector('[data-count="mine"]').textContent = mine.items.length || "";
}

function showCounts(counts) {
  for (const k of ["queued", "bot", "snoozed", "resolved"]) {
    const span = $("queues").querySelector(`[data-count="${k}"]`);
    span.textContent = counts[k] || "";
    span.classList.toggle("hot", k === "queued" && counts[k] > 0);
  }
  state.queued = counts.queued;
  document.title = (counts.queued ? `(${counts.queued}) ` : "") + "Switchboard";
}

function who(c, contacts) {
  return contacts[c.contact] || "Customer " + c.contact;
}

function until(ms) {
  const s = Math.round((ms - Date.now()) / 1000);
  return s <= 0 ? "now" : "in " + ago(Date.now() - s * 1000);
}

function slaTag(sla) {
  const what = sla.kind === "first_response" ? "first reply" : "reply";
  if (sla.breached) return el("span", { class: "tag urgent", text: `SLA missed: ${what}` });
  const cls = sla.warned ? "tag waiting" : "tag";
  return el("span", { class: cls, text: `${what} due ${until(sla.due_ms)}` });
}

function listItem(c, contacts) {
  const tags = el("span", { class: "tags" });
  tags.append(el("span", { class: "tag", text: c.channel }));
  if (c.status === "queued" && c.escalation) {
    tags.append(el("span", { class: "tag waiting", text: "waiting " + ago(c.escalation.at_ms) }));
  }
  if (c.assignee) tags.append(el("span", { class: "tag", text: "→ " + agentName(c.assignee) }));
  if (c.priority !== "normal") tags.append(el("span", { class: "tag " + c.priority, text: c.priority }));
  for (const l of c.labels) tags.append(el("span", { class: "tag", text: "#" + l }));
  if (c.unreachable) tags.append(el("span", { class: "tag urgent", text: "unreachable" }));
  if (c.sla) tags.append(slaTag(c.sla));
  const button = el("button", {
    type: "button",
    "data-id": c.id,
    "aria-current": state.current && state.current.conversation.id === c.id ? "true" : "false",
    onclick: () => openConversation(c.id),
  },
    el("span", { class: "row1" },
      el("span", { class: "who", text: who(c, contacts) }),
      el("span", { class: "when", text: c.status + " · " + ago(c.updated_at_ms) })),
    c.subject ? el("span", { class: "subject", text: c.subject }) : null,
    el("span", { class: "preview", text: c.preview || " " }),
    tags);
  return el("li", {}, button);
}

// ---- one conversation ----------------------------------------------------------------

async function openConversation(id) {
  const detail = await api("GET", "/conversations/" + id);
  const first = !state.current || state.current.conversation.id !== id;
  state.current = detail;
  if (location.hash !== "#c/" + id) history.replaceState(null, "", "#c/" + id);
  for (const b of document.querySelectorAll("#conversations button")) {
    b.setAttribute("aria-current", Number(b.dataset.id) === id ? "true" : "false");
  }
  $("app").classList.add("reading");
  $("none").hidden = true;
  $("conversation").hidden = false;
  renderConversation(detail, first);
  loadSide(detail);
  if (first) $("reply").focus();
}

async function refreshConversation() {
  if (!state.current) return;
  const id = state.current.conversation.id;
  const detail = await api("GET", "/conversations/" + id);
  if (!state.current || state.current.conversation.id !== id) return;
  state.current = detail;
  renderConversation(detail, false);
  loadSide(detail);
}

function renderConversation(d, first) {
  const c = d.conversation;
  const name = (d.contact && d.contact.name) || "Customer " + c.contact;
  $("c-title").textContent = visible(c.subject ? `${name} — ${c.subject}` : name);
  const owner = c.assignee ? " · assigned to " + agentName(c.assignee) : "";
  $("c-meta").replaceChildren(
    `#${c.id} · ${c.channel} · ${c.status}${owner} · since ${clock(c.created_at_ms)} `,
    c.sla ? slaTag(c.sla) : "");
  const mineOrFree = !c.assignee || c.assignee === state.me.id;
  $("a-claim").hidden = c.status === "resolved" || c.assignee === state.me.id;
  $("a-claim").textContent = mineOrFree ? "Claim" : "Take over";
  $("a-resolve").hidden = c.status === "resolved";
  $("a-reopen").hidden = c.status !== "resolved";
  $("a-handback").hidden = c.status === "bot" || c.status === "resolved";
  $("a-snooze").hidden = c.status === "resolved" || c.status === "bot";
  $("a-assign").value = "";
  $("a-priority").value = c.priority;
  if (document.activeElement !== $("a-labels")) $("a-labels").value = c.labels.join(", ");

  const esc = $("escalation");
  esc.hidden = !c.escalation || c.status === "bot";
  if (c.escalation) {
    esc.replaceChildren(
      el("strong", { text: "Escalated: " + c.escalation.reason.replaceAll("_", " ") }),
      document.createTextNode(" — " + c.escalation.detail + " (" + ago(c.escalation.at_ms) + " ago)"));
  }
  $("unreachable").hidden = !c.unreachable;
  $("unreachable").textContent = visible(c.unreachable ? "The customer cannot be reached on " + c.channel + ": " + c.unreachable : "");

  const list = $("transcript");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(...transcriptItems(d));
  if (first || atBottom) list.scrollTop = list.scrollHeight;
}

function transcriptItems(d) {
  const items = [];
  for (const m of d.messages) items.push([m.created_at_ms, 0, messageItem(m)]);
  for (const n of d.notes) {
    items.push([n.created_at_ms, 1, el("li", { class: "msg note" },
      el("div", { class: "by", text: "Private note · " + agentName(n.author) + " · " + clock(n.created_at_ms) }),
      messageText(n.text, `note:${n.id}`))]);
  }
  for (const e of d.events) {
    const line = eventLine(e);
    if (line) items.push([e.at_ms, 2, el("li", { class: "event", text: line + " · " + clock(e.at_ms) })]);
  }
  items.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const shown = items.map((i) => i[2]);
  if (d.older_messages) {
    shown.unshift(el("li", { class: "event", text: "Older messages are not shown here (GET /api/v1/conversations/" + d.conversation.id + "/messages pages through them)." }));
  }
  return shown;
}

function eventLine(e) {
  switch (e.type) {
    case "status_changed": return `${e.from} → ${e.to}: ${e.reason}`;
    case "assignee_changed": return e.to ? `assigned to ${agentName(e.to)}` : "returned to the queue";
    case "message_edited": return `the customer edited message ${e.seq} (was: “${clip(e.previous, 300)}”)`;
    case "message_deleted": return `the customer deleted message ${e.seq}`;
    case "channel_unreachable": return "customer unreachable on this channel";
    case "reachable_again": return "customer reachable again";
    case "sla_due_soon": return `SLA ${e.target.replace("_", " ")} due soon (${clock(e.due_ms)})`;
    case "sla_breached": return `SLA ${e.target.replace("_", " ")} missed (was due ${clock(e.due_ms)})`;
    default: return null;
  }
}

function authorOf(m) {
  switch (m.author.kind) {
    case "customer": return ["customer", "Customer"];
    case "bot": return ["bot", "Bot"];
    case "agent": return ["agent", agentName(m.author.agent)];
    default: return ["system", "System"];
  }
}

function messageItem(m) {
  const [cls, author] = authorOf(m);
  // In a group chat, the member who wrote it.
  const name = m.member ? `${m.member.name || m.member.user} (${m.member.user})` : author;
  const by = el("div", { class: "by" }, el("span", { text: name }), el("span", { text: clock(m.created_at_ms) }));
  if (m.edited_at_ms) by.append(el("span", { text: "edited" }));
  if (m.deleted_at_ms) by.append(el("span", { text: "deleted by the customer" }));
  if (m.payload) by.append(el("span", { class: "payload", title: m.payload, text: "pressed a button" }));
  const subject = m.subject ? el("div", { class: "subject", text: m.subject }) : null;
  const li = el("li", { class: "msg " + cls, "data-seq": m.seq }, by, subject, messageText(m.text, `msg:${m.conversation}:${m.seq}:${m.text.length}`));
  if (m.verdict) {
    const v = m.verdict;
    const score = v.score === null || v.score === undefined ? "" : ` (score ${v.score.toFixed(2)})`;
    const entry = v.entry ? ` · ${v.entry}` : "";
    li.append(el("div", { class: "verdict", text: `Bot: ${v.decision}${entry}${score} — ${v.reason}` }));
  }
  if (m.buttons && m.buttons.length) {
    li.append(el("div", { class: "verdict", text: "Options: " + m.buttons.map((b, i) => `${i + 1}. ${b.label}`).join("  ") }));
  }
  if (m.attachments && m.attachments.length) li.append(files(m.attachments));
  if (m.delivery) li.append(delivery(m));
  return li;
}

function files(list) {
  const box = el("div", { class: "files" });
  for (const a of list) {
    if (!a.blob) {
      box.append(el("span", { class: "tag", text: `${a.name} (${a.not_kept || "not kept"})` }));
      continue;
    }
    const href = "/api/v1/attachments/" + encodeURIComponent(a.blob);
    box.append(el("a", { href, download: a.name, text: `${a.name} (${Math.ceil(a.size / 1024)} KB)` }));
    if (a.content_type.startsWith("text/html")) {
      const show = el("button", { type: "button", class: "quiet", text: "Show formatted" });
      show.addEventListener("click", () => {
        // The frame gets no script, no same-origin access, no remote loads (server policy).
        const frame = el("iframe", { class: "email-html", sandbox: "", referrerpolicy: "no-referrer",
          title: a.name, src: href + "?view=html" });
        show.replaceWith(frame);
      });
      box.append(show);
    }
  }
  return box;
}

function delivery(m) {
  const d = m.delivery;
  const text = {
    queued: d.attempts ? `sending… (attempt ${d.attempts + 1})` : "queued",
    sent: "sent",
    failed: "failed: " + (d.last_error || "unknown error"),
  }[d.state];
  const div = el("div", { class: "delivery " + d.state, text });
  if (d.state === "failed") {
    div.append(" ", el("button", { type: "button", class: "quiet", text: "Retry",
      onclick: () => act(`/conversations/${m.conversation}/messages/${m.seq}/retry`) }));
  }
  return div;
}

async function loadSide(d) {
  const c = d.conversation;
  const contact = d.contact;
  const box = $("contact");
  box.replaceChildren();
  if (contact) {
    box.append(el("div", { text: contact.name || "Customer " + contact.id }));
    for (const i of contact.identities) box.append(el("div", { class: "muted", text: `${i.channel}: ${i.user}` }));
  }
  const [history, sugg] = await Promise.all([
    api("GET", `/contacts/${c.contact}/conversations`).catch(() => []),
    api("GET", `/conversations/${c.id}/suggestions`).catch(() => ({ suggestions: [] })),
  ]);
  if (!state.current || state.current.conversation.id !== c.id) return;
  $("history").replaceChildren(...history.filter((h) => h.id !== c.id).reverse().map((h) =>
    el("li", {}, el("button", { type: "button", onclick: () => openConversation(h.id) },
      el("div", { text: `${h.channel} · ${h.status} · ${clock(h.updated_at_ms)}` }),
      el("div", { class: "muted", text: h.preview })))));
  if (!$("history").children.length) $("history").append(el("li", { class: "muted", text: "No other conversations." }));
  $("suggestions").replaceChildren(...sugg.suggestions.map((s) =>
    el("li", { class: "suggestion" },
      el("div", { class: "q", text: s.question }),
      el("div", { class: "a", text: s.answer }),
      el("button", { type: "button", class: "quiet", text: "Insert", "data-entry": s.entry,
        onclick: () => insertText(s.answer) }))));
  if (!$("suggestions").children.length) $("suggestions").append(el("li", { class: "muted", text: "No suggestions." }));
}

function insertText(text) {
  const box = $("reply");
  box.value = box.value.trim() ? box.value.trimEnd() + "\n" + text : text;
  box.focus();
}

// ---- acting --------------------------------------------------------------------------

async function act(path, body) {
  $("send-error").textContent = "";
  try {
    await api("POST", path, body === undefined ? {} : body);
    await refreshConversation();
    state.refreshList();
  } catch (e) {
    $("send-error").textContent = e.message;
  }
}

async function send(ev) {
  if (ev) ev.preventDefault();
  const box = $("reply");
  const text = box.value.trim();
  if (!text || !state.current) return;
  const id = state.current.conversation.id;
  const note = $("as-note").checked;
  $("send").disabled = true;
  $("send-error").textContent = "";
  // One key per composed reply: pressing Send again after a lost answer cannot send twice.
  if (!state.sendKey || state.sendKey.text !== text || state.sendKey.id !== id) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    state.sendKey = { text, id, key: Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("") };
  }
  try {
    const headers = note ? {} : { "Idempotency-Key": state.sendKey.key };
    await api("POST", `/conversations/${id}/${note ? "notes" : "messages"}`, { text }, headers);
    state.sendKey = null;
    box.value = "";
    await refreshConversation();
  } catch (e) {
    $("send-error").textContent = "Not sent: " + e.message;
  } finally {
    $("send").disabled = false;
  }
}

function snoozeUntil(choice) {
  if (choice === "tomorrow") {
    const t = new Date();
    t.setDate(t.getDate() + 1);
    t.setHours(9, 0, 0, 0);
    return t.getTime();
  }
  return Date.now() + Number(choice);
}

function openTeach() {
  const d = state.current;
  if (!d) return;
  const last = (kind) => [...d.messages].reverse().find((m) => m.author.kind === kind);
  // A knowledge-base question is a sentence or two; a form field holding 64 KB is slow too.
  $("t-question").value = clip((last("customer") || {}).text || "", 1000);
  $("t-answer").value = (last("agent") || {}).text || "";
  $("teach-error").textContent = "";
  $("teach").showModal();
}

async function submitTeach(ev) {
  ev.preventDefault();
  try {
    await api("POST", "/kb/proposals", {
      question: $("t-question").value.trim(),
      answer: $("t-answer").value.trim(),
      conversation: state.current.conversation.id,
    });
    $("teach").close();
    $("send-error").textContent = "Proposed to the knowledge base; an admin will review it.";
  } catch (e) {
    $("teach-error").textContent = e.message;
  }
}

// ---- canned responses: "/" in the reply box ------------------------------------------

const canned = { open: false, items: [], index: 0, start: 0 };

function cannedQuery() {
  const box = $("reply");
  const upto = box.value.slice(0, box.selectionStart);
  const m = upto.match(/(^|\s)\/([\p{L}\p{N}_-]*)$/u);
  return m ? { word: m[2].toLowerCase(), start: upto.length - m[2].length - 1 } : null;
}

function updateCanned() {
  const q = cannedQuery();
  const menu = $("canned-menu");
  if (!q) return closeCanned();
  canned.items = state.canned.filter((c) =>
    c.shortcut.startsWith(q.word) || c.title.toLowerCase().includes(q.word)).slice(0, 8);
  canned.start = q.start;
  if (!canned.items.length) return closeCanned();
  canned.open = true;
  canned.index = Math.min(canned.index, canned.items.length - 1);
  menu.replaceChildren(...canned.items.map((c, i) => el("li", {
    role: "option", "aria-selected": i === canned.index ? "true" : "false",
    onmousedown: (ev) => { ev.preventDefault(); pickCanned(i); },
  }, el("strong", { text: "/" + c.shortcut }), " ", el("span", { text: c.title }))));
  menu.hidden = false;
}

function closeCanned() {
  canned.open = false;
  canned.index = 0;
  $("canned-menu").hidden = true;
}

function pickCanned(i) {
  const box = $("reply");
  const c = canned.items[i];
  const end = box.selectionStart;
  box.value = box.value.slice(0, canned.start) + c.text + box.value.slice(end);
  const caret = canned.start + c.text.length;
  box.setSelectionRange(caret, caret);
  closeCanned();
  box.focus();
}

function onReplyKey(ev) {
  if (canned.open) {
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      const n = canned.items.length;
      canned.index = (canned.index + (ev.key === "ArrowDown" ? 1 : n - 1)) % n;
      updateCanned();
      return;
    }
    if (ev.key === "Enter" || ev.key === "Tab") {
      ev.preventDefault();
      pickCanned(canned.index);
      return;
    }
    if (ev.key === "Escape") {
      ev.preventDefault();
      closeCanned();
      return;
    }
  }
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    send();
  }
}

function openCannedManager() {
  const list = $("canned-list");
  list.replaceChildren(...state.canned.map((c) => el("li", {},
    el("strong", { text: "/" + c.shortcut }),
    el("span", { text: c.title }),
    el("button", { type: "button", class: "quiet", text: "Delete", "aria-label": "Delete /" + c.shortcut,
      onclick: async () => {
        await api("DELETE", "/canned/" + c.id);
        state.canned = await api("GET", "/canned");
        openCannedManager();
      } }))));
  if (!state.canned.length) list.append(el("li", { class: "muted", text: "None yet." }));
  $("canned-error").textContent = "";
  if (!$("canned").open) $("canned").showModal();
}

async function saveCanned(ev) {
  ev.preventDefault();
  try {
    await api("POST", "/canned", {
      shortcut: $("cr-shortcut").value, title: $("cr-title").value, text: $("cr-text").value,
    });
    for (const id of ["cr-shortcut", "cr-title", "cr-text"]) $(id).value = "";
    state.canned = await api("GET", "/canned");
    openCannedManager();
  } catch (e) {
    $("canned-error").textContent = e.message;
  }
}

// ---- wiring --------------------------------------------------------------------------

function wire() {
  state.refreshList = debounce(() => loadList(false).catch(() => {}), 250);
  state.refreshConversation = debounce(() => refreshConversation().catch(() => {}), 150);
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("presence").addEventListener("change", async (ev) => {
    state.me = await api("PUT", "/me/presence", { presence: ev.target.value });
  });
  $("notify").addEventListener("click", async () => {
    await Notification.requestPermission();
    $("notify").hidden = Notification.permission !== "default";
  });
  for (const b of document.querySelectorAll("#queues > button")) {
    b.addEventListener("click", () => selectView(b.dataset.view));
  }
  const relist = debounce(() => loadList(false), 250);
  $("q").addEventListener("input", relist);
  $("f-label").addEventListener("input", relist);
  $("f-channel").addEventListener("change", relist);
  $("more").addEventListener("click", () => loadList(true));
  $("back").addEventListener("click", () => $("app").classList.remove("reading"));

  const cid = () => state.current.conversation.id;
  $("a-claim").addEventListener("click", () => act(`/conversations/${cid()}/claim`));
  $("a-resolve").addEventListener("click", () => act(`/conversations/${cid()}/resolve`));
  $("a-reopen").addEventListener("click", () => act(`/conversations/${cid()}/reopen`));
  $("a-handback").addEventListener("click", () => act(`/conversations/${cid()}/handback`));
  $("a-assign").addEventListener("change", (ev) => {
    if (ev.target.value) act(`/conversations/${cid()}/assign`, { agent_id: Number(ev.target.value) });
  });
  $("a-snooze").addEventListener("change", (ev) => {
    if (ev.target.value) act(`/conversations/${cid()}/snooze`, { until_ms: snoozeUntil(ev.target.value) });
    ev.target.value = "";
  });
  $("a-priority").addEventListener("change", async (ev) => {
    await api("PUT", `/conversations/${cid()}/priority`, { priority: ev.target.value });
    state.refreshConversation();
  });
  $("a-labels").addEventListener("change", async (ev) => {
    const labels = ev.target.value.split(",").map((s) => s.trim()).filter(Boolean);
    try {
      await api("PUT", `/conversations/${cid()}/labels`, { labels });
    } catch (e) {
      $("send-error").textContent = e.message;
    }
    state.refreshConversation();
  });
  $("a-teach").addEventListener("click", openTeach);
  $("teach-form").addEventListener("submit", submitTeach);
  $("t-cancel").addEventListener("click", () => $("teach").close());

  $("manage-canned").addEventListener("click", openCannedManager);
  $("canned-form").addEventListener("submit", saveCanned);
  $("cr-close").addEventListener("click", () => $("canned").close());
  $("composer").addEventListener("submit", send);
  $("reply").addEventListener("keydown", onReplyKey);
  $("reply").addEventListener("input", updateCanned);
  $("reply").addEventListener("blur", () => setTimeout(closeCanned, 100));
  $("as-note").addEventListener("change", (ev) => {
    $("composer").classList.toggle("note", ev.target.checked);
    $("send").textContent = ev.target.checked ? "Add note" : "Send";
  });
  // Keep waiting times fresh.
  setInterval(() => { if (!$("app").hidden) state.refreshList(); }, 30000);
}

wire();
api("GET", "/session").then(start, () => showSignIn(""));
