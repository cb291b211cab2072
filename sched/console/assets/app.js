// Paddock web console. Plain JavaScript, no dependencies, nothing fetched from
// elsewhere. The client token lives in sessionStorage and is sent as a bearer header;
// it never goes into a URL. See package sched/console's doc.go.
"use strict";

const TOKEN_KEY = "paddock.token";
const STATES = ["QUEUED", "LEASED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "DEAD"];
const TERMINAL = new Set(["STATE_SUCCEEDED", "STATE_FAILED", "STATE_CANCELLED", "STATE_DEAD"]);
const INLINE_MAX = 4096; // bytes of an output shown inline; larger ones are offered as downloads

// ---- helpers -------------------------------------------------------------

const $ = (sel, root = document) => root.querySelector(sel);

// h builds an element: h("td", {class: "num"}, "text", child, ...). Text is never parsed as HTML.
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null || k === false) continue;
    el.append(k instanceof Node ? k : String(k));
  }
  return el;
}

function svgEl(tag, attrs, ...kids) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const k of kids) el.append(k instanceof Node ? k : String(k));
  return el;
}

const short = (s) => (s && s.length > 13 ? s.slice(0, 8) + "…" + s.slice(-4) : s || "");
const stateName = (s) => (s || "STATE_UNSPECIFIED").replace(/^STATE_/, "").toLowerCase();
const stateBadge = (s) => h("span", { class: "state " + stateName(s) }, stateName(s));
const num = (v) => Number(v || 0);
// kindName is a failure kind as people read it ("" when unspecified): FAILURE_KIND_HANDLER_ERROR -> "handler error".
const kindName = (k) => (!k || k === "FAILURE_KIND_UNSPECIFIED" ? "" : k.replace(/^FAILURE_KIND_/, "").toLowerCase().replace(/_/g, " "));

function ago(ms) {
  ms = num(ms);
  if (!ms) return "";
  const d = (Date.now() - ms) / 1000;
  if (d < 0) return "in " + dur(-d * 1000);
  return dur(d * 1000) + " ago";
}

function dur(ms) {
  ms = num(ms);
  if (ms < 1000) return Math.round(ms) + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}

function bytes(n) {
  n = num(n);
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

const time = (ms) => (num(ms) ? new Date(num(ms)).toLocaleString() : "");

// b64 decodes protojson bytes (standard or URL-safe base64) to a Uint8Array.
function b64(s) {
  if (!s) return new Uint8Array(0);
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// asText returns the bytes as text when they are UTF-8 without control characters
// (other than tab and newlines), or null.
function asText(u8) {
  try {
    const s = new TextDecoder("utf-8", { fatal: true }).decode(u8);
    return /[\u0000-\u0008\u000b\u000c\u000e-\u001f]/.test(s) ? null : s;
  } catch (e) {
    return null;
  }
}

function saveBytes(u8, name) {
  const url = URL.createObjectURL(new Blob([u8], { type: "application/octet-stream" }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// ---- API -------------------------------------------------------------------

class APIError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

function authHeaders() {
  const t = sessionStorage.getItem(TOKEN_KEY);
  return t ? { Authorization: "Bearer " + t } : {};
}

// call invokes a unary RPC of the connect JSON API: call("TaskService", "List", {...}).
async function call(service, method, body) {
  const res = await fetch("/paddock.v1." + service + "/" + method, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify(body || {}),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new APIError(data.code || String(res.status), data.message || res.statusText);
    if (err.code === "unauthenticated") signedOut(err.message);
    throw err;
  }
  return data;
}

async function downloadBlob(digest, name) {
  const res = await fetch("/v1/blobs/" + encodeURIComponent(digest), { headers: authHeaders() });
  if (!res.ok) throw new APIError(String(res.status), (await res.text()) || res.statusText);
  saveBytes(new Uint8Array(await res.arrayBuffer()), name);
}

// ---- the live feed -----------------------------------------------------------
// /ui/events read with fetch (EventSource cannot send the bearer header).

const feed = {
  ctl: null,
  listeners: new Set(),
  retry: 500,
  on(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); },
  emit(name, data) { for (const fn of [...this.listeners]) fn(name, data); },
  status(on) {
    const el = $("#live");
    el.className = "live " + (on ? "on" : "off");
    el.textContent = on ? "live" : "reconnecting";
  },
  stop() { if (this.ctl) this.ctl.abort(); this.ctl = null; },
  async start() {
    this.stop();
    const ctl = new AbortController();
    this.ctl = ctl;
    while (this.ctl === ctl) {
      try {
        const res = await fetch("/ui/events", { headers: authHeaders(), signal: ctl.signal });
        if (res.status === 401) { signedOut("token refused"); return; }
        if (!res.ok || !res.body) throw new Error("feed: HTTP " + res.status);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let name = "message", data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) name = line.slice(7);
              else if (line.startsWith("data: ")) data += line.slice(6);
            }
            if (block.startsWith(":")) continue;
            if (name === "hello") { this.retry = 500; this.status(true); }
            this.emit(name, data ? JSON.parse(data) : {});
          }
        }
        this.emit("resync", {}); // the stream ended: what is shown may be stale
      } catch (e) {
        if (ctl.signal.aborted) return;
      }
      if (this.ctl !== ctl) return;
      this.status(false);
      await new Promise((r) => setTimeout(r, this.retry));
      this.retry = Math.min(this.retry * 2, 10000);
    }
  },
};

// ---- router and views --------------------------------------------------------

let current = null; // the view shown: {stop()}

function route() {
  if (current && current.stop) current.stop();
  current = null;
  const view = $("#view");
  view.replaceChildren();
  const hash = location.hash || "#/";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  let name = "overview";
  if (path.startsWith("/task/")) name = "task";
  else if (path === "/tasks") name = "tasks";
  else if (path === "/charts") name = "charts";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === name || (name === "task" && a.dataset.view === "tasks"));
  switch (name) {
    case "task": current = taskView(view, decodeURIComponent(path.slice(6))); break;
    case "tasks": current = tasksView(view, params); break;
    case "charts": current = chartsView(view); break;
    default: current = overviewView(view);
  }
}

// every runs fn now and every ms while the view is shown (views other than the task
// list, whose data the feed does not carry).
function every(ms, fn) {
  let timer = null, stopped = false;
  const tick = async () => {
    try { await fn(); } catch (e) { if (!(e instanceof APIError)) console.warn(e); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

function showError(view, e) {
  if (e instanceof APIError && e.code === "unauthenticated") return; // signed out: the login form says why
  view.replaceChildren(h("p", { class: "error", role: "alert" }, e.message || String(e)));
}

// Overview: status, hosts, guests per pool, agents with slots.
function overviewView(view) {
  const stop = every(5000, async () => {
    try {
      const st = await call("ClusterService", "Status");
      if (!st.admin) { // the machines are listed to admin tokens only
        view.replaceChildren(...renderOverview(st, null, null, null));
        return;
      }
      const [hosts, vms, agents] = await Promise.all([
        call("ClusterService", "ListHosts"), call("ClusterService", "ListVMs"), call("ClusterService", "ListAgents"),
      ]);
      view.replaceChildren(...renderOverview(st, hosts.hosts || [], vms.vms || [], agents.agents || []));
    } catch (e) {
      showError(view, e);
    }
  });
  return { stop };
}

// renderOverview draws the overview; hosts, vms and agents are null for a tenant's token.
function renderOverview(st, hosts, vms, agents) {
  const admin = hosts !== null;
  const queued = (st.queue || []).filter((q) => q.state === "STATE_QUEUED").reduce((a, q) => a + num(q.count), 0);
  const running = (st.queue || []).filter((q) => q.state !== "STATE_QUEUED").reduce((a, q) => a + num(q.count), 0);
  const card = (k, v) => h("div", { class: "card" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v));
  const out = [
    h("h1", {}, "Overview"),
    h("div", { class: "cards", id: "status" },
      card("Version", st.version || "dev"), card("Up", dur(Date.now() - num(st.startedAtUnixMs))),
      card("Agents connected", num(st.agentsConnected)), card("Agents lost", num(st.agentsLost)),
      card("Queued", queued), card("Leased or running", running), ...(admin ? [card("Hosts", hosts.length), card("Guests", vms.length)] : [])),
    admin ? h("p", { class: "muted" }, "Store: ", h("code", {}, st.store || "")) :
      h("p", { class: "muted", id: "tenant-view" }, "Hosts, guests and agents are shown to admin tokens only; this token (tenant " + (st.tenant || "") + ") sees the queues and its own tasks."),
  ];
  out.push(h("h2", {}, "Queues"));
  const delays = new Map((st.queueDelays || []).map((d) => [d.type, d]));
  const types = new Set([...(st.queue || []).map((q) => q.type), ...delays.keys()]);
  out.push(types.size === 0 ? h("p", { class: "muted" }, "No task is waiting, and no connected agent serves a type.") :
    h("table", { id: "queues" }, h("tr", {}, h("th", {}, "Type"), h("th", { class: "num" }, "Queued"), h("th", { class: "num" }, "Leased"),
      h("th", { class: "num" }, "Running"), h("th", { class: "num" }, "Queuing delay")),
    [...types].sort().map((t) => {
      const c = (s) => (st.queue || []).filter((q) => q.type === t && q.state === s).reduce((a, q) => a + num(q.count), 0);
      const d = delays.get(t);
      return h("tr", {}, h("td", {}, h("a", { href: "#/tasks?type=" + encodeURIComponent(t) }, t)), h("td", { class: "num" }, c("STATE_QUEUED")),
        h("td", { class: "num" }, c("STATE_LEASED")), h("td", { class: "num" }, c("STATE_RUNNING")), h("td", { class: "num" }, d ? dur(d.delayMs) : "—"));
    })));

  if (!admin) return out;
  out.push(h("h2", {}, "Hosts"));
  out.push(hosts.length === 0 ? h("p", { class: "muted" }, "No host daemon has connected (agents may connect directly to the agent port).") :
    h("table", { id: "hosts" }, h("tr", {}, ["Host", "State", "Accel", "CPU", "Memory", "NIC", "Guests", "Pools"].map((x) => h("th", {}, x))),
      hosts.map((ho) => {
        const mem = num(ho.memoryBytes), avail = num(ho.memAvailableBytes);
        return h("tr", {},
          h("td", {}, ho.id), h("td", {}, ho.state), h("td", {}, ho.accel),
          h("td", {}, num(ho.cpus) + " CPUs, " + num(ho.cpuPercent).toFixed(0) + "%", meter(num(ho.cpuPercent) / 100)),
          h("td", {}, bytes(mem - avail) + " of " + bytes(mem), meter(mem ? (mem - avail) / mem : 0)),
          h("td", {}, bytes(ho.nicBytesPerSec) + "/s"), h("td", { class: "num" }, num(ho.guests)),
          h("td", {}, (ho.pools || []).map((p) => h("div", {}, h("b", {}, p.name), " ", p.state, " · ", (p.taskTypes || []).join(", "),
            " · idle ≥ " + num(p.minIdle) + ", max " + num(p.max), (p.blocked || []).length ? h("span", { class: "error" }, " · blocked: " + p.blocked.join(", ")) : null,
            p.error ? h("div", { class: "error" }, p.error) : null))));
      })));

  out.push(h("h2", {}, "Guests"));
  if (vms.length === 0) out.push(h("p", { class: "muted" }, "No guests."));
  const pools = new Map();
  for (const v of vms) {
    const k = v.host + " / " + v.pool;
    if (!pools.has(k)) pools.set(k, []);
    pools.get(k).push(v);
  }
  for (const [k, list] of pools) {
    out.push(h("h3", {}, "Pool " + k + " (" + list.length + ")"));
    out.push(h("table", { class: "guests" }, h("tr", {}, ["Guest", "State", "Agent", "Running", "Tasks run", "CPU", "Memory", "Up", "Boot"].map((x) => h("th", {}, x))),
      list.map((v) => h("tr", {}, h("td", { class: "mono" }, v.name), h("td", {}, v.state), h("td", {}, v.agent || "—"),
        h("td", { class: "num" }, num(v.running)), h("td", { class: "num" }, num(v.tasksRun)), h("td", { class: "num" }, num(v.cpuPercent).toFixed(0) + "%"),
        h("td", { class: "num" }, bytes(v.memoryBytes)), h("td", {}, dur(v.uptimeMs)), h("td", {}, v.bootMs ? dur(v.bootMs) : "")))));
  }

  out.push(h("h2", {}, "Agents"));
  out.push(agents.length === 0 ? h("p", { class: "muted" }, "No agent has connected.") :
    h("table", { id: "agents" }, h("tr", {}, ["Agent", "Host", "State", "Running", "Slots per type", "Version", "Heartbeat"].map((x) => h("th", {}, x))),
      agents.map((a) => h("tr", { dataset: { agent: a.id } },
        h("td", { class: "mono" }, a.id), h("td", {}, a.host), h("td", {}, a.state),
        h("td", { class: "num" }, num(a.running) + (num(a.totalSlots) ? " / " + num(a.totalSlots) : "")),
        h("td", {}, (a.types || []).map((t) => h("div", {}, h("code", {}, t.name), " ", num(t.running) + " of " + num(t.slots) + " slots",
          h("span", { class: "muted" }, " (min " + num(t.minSlots) + ")")))),
        h("td", {}, a.version), h("td", {}, ago(a.lastHeartbeatUnixMs))))));
  return out;
}

function meter(frac) {
  const pct = Math.max(0, Math.min(1, frac)) * 100;
  const span = h("span");
  span.style.width = pct.toFixed(0) + "%";
  return h("div", { class: "bar" }, span);
}

// Task list: filters in the hash (#/tasks?state=QUEUED&type=x), rows updated from the feed.
function tasksView(view, params) {
  const filter = { state: params.get("state") || "", type: params.get("type") || "", tenant: params.get("tenant") || "" };
  const setFilter = () => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter)) if (v) q.set(k, v);
    location.hash = "#/tasks" + (q.toString() ? "?" + q : "");
  };
  const stateSel = h("select", { id: "f-state", onchange: (e) => { filter.state = e.target.value; setFilter(); } },
    h("option", { value: "" }, "any"), STATES.map((s) => h("option", { value: s, selected: filter.state === s }, s.toLowerCase())));
  const typeIn = h("input", { id: "f-type", value: filter.type, placeholder: "any", onchange: (e) => { filter.type = e.target.value.trim(); setFilter(); } });
  const tenantIn = h("input", { id: "f-tenant", value: filter.tenant, placeholder: "any", onchange: (e) => { filter.tenant = e.target.value.trim(); setFilter(); } });
  const tbody = h("tbody", { id: "task-rows" });
  const more = h("button", { type: "button", hidden: true }, "More");
  const count = h("span", { class: "muted", id: "task-count" });
  view.append(h("h1", {}, "Tasks"),
    h("div", { class: "filters" }, h("label", {}, "State", stateSel), h("label", {}, "Type", typeIn), h("label", {}, "Tenant", tenantIn), count),
    h("table", { id: "tasks" }, h("thead", {}, h("tr", {}, ["Task", "Type", "State", "Attempt", "Agent", "Submitted", "Updated", "Error"].map((x) => h("th", {}, x)))), tbody),
    more);
  const rows = new Map(); // id -> {tr, task}
  const matches = (t) => (!filter.state || t.state === "STATE_" + filter.state) && (!filter.type || (t.spec && t.spec.type) === filter.type) &&
    (!filter.tenant || (t.spec && t.spec.tenant) === filter.tenant);
  const render = (t) => h("tr", { dataset: { id: t.id, state: stateName(t.state) } },
    h("td", { class: "mono" }, h("a", { href: "#/task/" + encodeURIComponent(t.id), title: t.id }, short(t.id))),
    h("td", {}, (t.spec && t.spec.type) || ""), h("td", {}, stateBadge(t.state)), h("td", { class: "num" }, num(t.attempt)),
    h("td", { class: "mono" }, t.agentId || ""), h("td", { title: time(t.createdAtUnixMs) }, ago(t.createdAtUnixMs)),
    h("td", { title: time(t.updatedAtUnixMs) }, ago(t.updatedAtUnixMs)), h("td", { class: "error" }, (t.error || "").slice(0, 160)));
  const updateCount = () => { count.textContent = rows.size + " shown"; };
  let next = "";
  const load = async (append) => {
    const req = { limit: 100 };
    if (filter.state) req.state = "STATE_" + filter.state;
    if (filter.type) req.type = filter.type;
    if (filter.tenant) req.tenant = filter.tenant;
    if (append) req.pageToken = next;
    const res = await call("TaskService", "List", req);
    if (!append) { rows.clear(); tbody.replaceChildren(); }
    for (const t of res.tasks || []) {
      if (rows.has(t.id)) continue;
      const tr = render(t);
      rows.set(t.id, { tr, task: t });
      tbody.append(tr);
    }
    next = res.nextPageToken || "";
    more.hidden = !next;
    updateCount();
  };
  more.addEventListener("click", () => load(true).catch((e) => showError(view, e)));
  const onEvent = (name, t) => {
    if (name === "hello" || name === "resync") { load(false).catch(() => {}); return; }
    if (name !== "task") return;
    const have = rows.get(t.id);
    if (have && num(have.task.updatedAtUnixMs) > num(t.updatedAtUnixMs)) return; // an older change arrived late
    if (!matches(t)) {
      if (have) { have.tr.remove(); rows.delete(t.id); updateCount(); }
      return;
    }
    const tr = render(t);
    tr.classList.add("flash");
    if (have) have.tr.replaceWith(tr);
    else if (!insertByAge(tr, t)) return; // the list is newest first
    rows.set(t.id, { tr, task: t });
    updateCount();
  };
  // insertByAge puts a task not shown yet before the first older row (a new task goes
  // first; an older task that changed into the filter goes to its place). It returns
  // false when the task belongs on a page not loaded yet.
  const older = (a, b) => num(a.createdAtUnixMs) < num(b.createdAtUnixMs) || (num(a.createdAtUnixMs) === num(b.createdAtUnixMs) && a.id < b.id);
  const insertByAge = (tr, t) => {
    for (const other of tbody.children) {
      const o = rows.get(other.dataset.id);
      if (o && older(o.task, t)) {
        other.before(tr);
        return true;
      }
    }
    if (next) return false;
    tbody.append(tr);
    return true;
  };
  const off = feed.on(onEvent);
  load(false).catch((e) => showError(view, e));
  return { stop: off };
}

// Task page: explanation, spec, attempts, output, actions, and the handler's log of
// each attempt. The log follows a running task: the feed's "log" event says that an
// attempt of this task has new lines, and the page reads them (TaskService.Logs) at
// most every LOG_EVERY ms; it never polls.
const LOG_EVERY = 250;

function taskView(view, id) {
  let stopTimer = null;
  let shown = null;
  const logs = h("section", { id: "logs" }); // kept across reloads of the rest of the page
  const reload = async () => {
    let task, why;
    try {
      [task, why] = await Promise.all([call("TaskService", "Get", { id }).then((r) => r.task), call("TaskService", "Explain", { id })]);
    } catch (e) {
      if (e.code === "not_found") {
        view.replaceChildren(h("h1", {}, "Task not found"), h("p", { class: "error", id: "not-found", role: "alert" }, "No task has the id ", h("code", {}, id), "."),
          h("p", {}, h("a", { href: "#/tasks" }, "All tasks")));
        return;
      }
      if (e.code === "invalid_argument") { showError(view, e); return; }
      throw e;
    }
    const first = !shown;
    shown = task;
    view.replaceChildren(...renderTask(task, why, reload), logs);
    if (first) loadLogs(); // only once the task exists (no 404 for a wrong id)
    if (stopTimer) { stopTimer(); stopTimer = null; }
    if (task.state === "STATE_QUEUED") stopTimer = every(5000, async () => { // agents come and go without task changes
      const w = await call("TaskService", "Explain", { id });
      const el = $("#why");
      if (el && shown && shown.state === "STATE_QUEUED") el.replaceWith(renderWhy(w));
    });
  };
  let logBusy = false, logAgain = false, logTimer = null;
  const loadLogs = async () => {
    if (logBusy) { logAgain = true; return; }
    logBusy = true;
    try {
      const r = await call("TaskService", "Logs", { id });
      logs.replaceChildren(...renderLogs(r).filter(Boolean));
    } catch (e) {
      if (e.code !== "not_found") logs.replaceChildren(h("p", { class: "error" }, "Logs: " + e.message));
    } finally {
      logBusy = false;
      if (logAgain) { logAgain = false; logSoon(); }
    }
  };
  const logSoon = () => { if (shown && !logTimer) logTimer = setTimeout(() => { logTimer = null; loadLogs(); }, LOG_EVERY); };
  let pending = null;
  const off = feed.on((name, t) => {
    if ((name === "task" && t.id === id) || name === "resync" || name === "hello") {
      clearTimeout(pending);
      pending = setTimeout(() => reload().catch((e) => showError(view, e)), 100);
      logSoon();
    } else if (name === "log" && t.id === id) {
      logSoon();
    }
  });
  reload().catch((e) => showError(view, e));
  return { stop: () => { off(); clearTimeout(pending); clearTimeout(logTimer); if (stopTimer) stopTimer(); } };
}

// renderLogs shows each attempt's log lines as text (never parsed as HTML).
function renderLogs(r) {
  const atts = r.attempts || [];
  const out = [h("h2", {}, "Logs")];
  if (atts.length === 0) {
    out.push(h("p", { class: "muted" }, TERMINAL.has(r.state) ? "The handler logged nothing." : "No lines yet; they appear here as the handler logs them."));
    return out;
  }
  for (const a of atts) {
    const lines = a.lines || [];
    const rows = lines.map((l) => h("div", { class: "line " + (l.level || "") },
      h("span", { class: "muted" }, new Date(Number(BigInt(l.unixNanos || 0) / 1000000n)).toISOString().slice(11, 23)), " ",
      h("span", { class: "lvl" }, (l.level || "").toUpperCase().padEnd(5)), " ", l.text || ""));
    out.push(h("h3", {}, "Attempt " + a.attempt),
      Number(a.droppedLines || 0) > 0 ? h("p", { class: "muted drop" }, "… " + a.droppedLines + " earlier lines (" + bytes(Number(a.droppedBytes || 0)) + ") dropped: the newest 1 MiB of each attempt is kept") : null,
      h("pre", { class: "out log", dataset: { attempt: String(a.attempt) } }, rows));
  }
  return out;
}

function renderWhy(why) {
  const reasons = why.reasons || [];
  return h("div", { class: "why", id: "why" }, h("b", {}, why.state === "STATE_QUEUED" ? "Why is it still queued?" : TERMINAL.has(why.state) ? "How it ended" : "Where it is"),
    h("ul", {}, reasons.map((r) => h("li", { dataset: { kind: (r.kind || "").replace(/^KIND_/, "").toLowerCase() } }, r.message,
      r.untilUnixMs ? h("span", { class: "muted" }, " (" + time(r.untilUnixMs) + ")") : null))));
}

function renderTask(t, why, reload) {
  const spec = t.spec || {};
  const terminal = TERMINAL.has(t.state);
  const msg = h("p", { id: "action-msg", role: "status" });
  const cancel = h("button", { type: "button", id: "cancel", class: "danger", disabled: terminal || t.cancelRequested, onclick: async () => {
    if (!confirm("Cancel task " + t.id + "?")) return;
    cancel.disabled = true;
    try { await call("TaskService", "Cancel", { id: t.id }); msg.textContent = "Cancel requested."; await reload(); } catch (e) { msg.textContent = e.message; msg.className = "error"; cancel.disabled = false; }
  } }, t.cancelRequested && !terminal ? "Cancelling…" : "Cancel");
  const canRetry = ["STATE_FAILED", "STATE_DEAD", "STATE_CANCELLED"].includes(t.state);
  const retry = h("button", { type: "button", id: "retry", class: "primary", disabled: !canRetry, title: "submit the same spec again as a new task", onclick: async () => {
    retry.disabled = true;
    try { const r = await call("TaskService", "Retry", { id: t.id }); location.hash = "#/task/" + encodeURIComponent(r.task.id); } catch (e) { msg.textContent = e.message; msg.className = "error"; retry.disabled = false; }
  } }, "Retry as a new task");
  const out = [
    h("h1", {}, "Task ", h("code", { id: "task-id" }, t.id), " ", h("span", { id: "task-state" }, stateBadge(t.state))),
    h("div", { class: "actions" }, cancel, retry), msg,
    renderWhy(why),
  ];
  if (t.error) out.push(h("p", { class: "error", id: "task-error" }, kindName(t.failureKind) ? kindName(t.failureKind) + ": " : "", t.error));
  const req = spec.requirements || {};
  const labels = Object.entries(req.labels || {}).map(([k, v]) => k + "=" + v).join(", ");
  out.push(h("h2", {}, "Spec"), h("dl", { class: "kv" },
    kv("Type", h("code", {}, spec.type)), kv("Tenant", spec.tenant), kv("Priority", num(spec.priority)), kv("Class", (spec.class || "").replace(/^CLASS_/, "").toLowerCase()),
    kv("Timeout", dur(spec.timeoutMs)), kv("Max attempts", num(spec.maxAttempts)), spec.idempotencyKey ? kv("Idempotency key", spec.idempotencyKey) : null,
    req.cpuMillis || req.memoryBytes || labels ? kv("Requirements", [req.cpuMillis ? num(req.cpuMillis) + " mCPU" : "", req.memoryBytes ? bytes(req.memoryBytes) : "", labels].filter(Boolean).join(" · ")) : null,
    kv("Submitted", time(t.createdAtUnixMs)), kv("Updated", time(t.updatedAtUnixMs)), t.finishedAtUnixMs ? kv("Finished", time(t.finishedAtUnixMs)) : null,
    kv("Payload", showBytes(spec.payload, "payload-" + t.id))));

  out.push(...files("inputs", "Inputs", spec.inputs, spec.inputBlobs));

  out.push(h("h2", {}, "Attempts"));
  const atts = t.attempts || [];
  out.push(atts.length === 0 ? h("p", { class: "muted" }, "Not run yet.") :
    h("table", { id: "attempts" }, h("tr", {}, ["#", "Agent", "Lease", "State", "Error", "Wall", "CPU", "Leased", "Finished"].map((x) => h("th", {}, x))),
      atts.map((a) => h("tr", {}, h("td", { class: "num" }, num(a.number)), h("td", { class: "mono" }, a.agentId), h("td", { class: "num" }, a.leaseId),
        h("td", {}, stateBadge(a.state)), h("td", { class: "error" }, a.error || "", a.error ? h("span", { class: "muted" }, " (" + [kindName(a.failureKind), a.retryable ? "retryable" : "fatal"].filter(Boolean).join(", ") + ")") : ""),
        h("td", { class: "num" }, a.usage ? dur(a.usage.wallMs) : ""), h("td", { class: "num" }, a.usage ? dur(a.usage.cpuMs) : ""),
        h("td", {}, time(a.leasedAtUnixMs)), h("td", {}, time(a.finishedAtUnixMs))))));

  if (t.state === "STATE_SUCCEEDED") {
    out.push(h("h2", {}, "Output"), h("div", { id: "output" }, showBytes(t.output, "output-" + t.id, true)));
    if (t.outputSha256) out.push(h("p", { class: "muted" }, "sha256 ", h("code", {}, t.outputSha256)));
    out.push(...files("outputs", "Named outputs", t.outputs, t.outputBlobs));
  }
  return out;
}

// files lists named inline files (name -> base64) and blobs (name -> BlobRef), each
// with a download button; nothing when there are none.
function files(id, title, inline, blobs) {
  const in_ = Object.entries(inline || {}).sort();
  const bl = Object.entries(blobs || {}).sort();
  if (!in_.length && !bl.length) return [];
  return [h("h2", {}, title), h("table", { id }, h("tr", {}, ["Name", "Where", "Size", ""].map((x) => h("th", {}, x))),
    in_.map(([n, v]) => h("tr", {}, h("td", {}, n), h("td", {}, "inline"), h("td", { class: "num" }, bytes(b64(v).length)),
      h("td", {}, h("button", { type: "button", onclick: () => saveBytes(b64(v), n) }, "Download")))),
    bl.map(([n, b]) => blobRow(n, b)))];
}

function kv(k, v) { return [h("dt", {}, k), h("dd", {}, v)]; }

function blobRow(name, b) {
  const st = h("span", { class: "error" });
  return h("tr", {}, h("td", {}, name), h("td", { class: "mono", title: b.digest }, short(b.digest)), h("td", { class: "num" }, bytes(b.size)),
    h("td", {}, h("button", { type: "button", onclick: () => downloadBlob(b.digest, name).catch((e) => { st.textContent = e.message; }) }, "Download"), st));
}

// showBytes shows short text inline; binary or long content is offered as a download.
function showBytes(s, name, withDownload) {
  const u8 = b64(s);
  if (u8.length === 0) return h("span", { class: "muted" }, "empty");
  const dl = h("button", { type: "button", class: "download", onclick: () => saveBytes(u8, name) }, "Download (" + bytes(u8.length) + ")");
  const text = u8.length <= INLINE_MAX ? asText(u8) : null;
  if (text === null) {
    return h("div", { class: "too-large" }, h("span", { class: "muted" }, u8.length > INLINE_MAX ?
      bytes(u8.length) + ": too large to show here. " : bytes(u8.length) + " of binary data. "), dl);
  }
  return h("div", {}, h("pre", { class: "out" }, text), withDownload ? dl : null);
}

// Charts: throughput, queue depth, submit-to-start latency (ClusterService.History).
function chartsView(view) {
  const stop = every(10000, async () => {
    let res;
    try {
      res = await call("ClusterService", "History");
    } catch (e) {
      showError(view, e);
      return;
    }
    const s = res.samples || [];
    const iv = num(res.intervalMs) || 10000;
    const xs = s.map((x) => num(x.atUnixMs));
    const rate = (x, n) => (num(x.durationMs) > 0 ? num(n) / (num(x.durationMs) / 1000) : 0);
    view.replaceChildren(h("h1", {}, "Last hour"), h("p", { class: "muted" }, s.length + " samples of " + dur(iv) + "; the last is the interval so far."),
      h("div", { class: "charts" },
        chart("chart-throughput", "Throughput (tasks/s)", xs, [
          { name: "succeeded", color: "#1f7a3d", ys: s.map((x) => rate(x, x.succeeded)) },
          { name: "failed", color: "#b42318", ys: s.map((x) => rate(x, x.failed)) },
          { name: "submitted", color: "#667085", ys: s.map((x) => rate(x, x.submitted)) }]),
        chart("chart-queue", "Queue depth (tasks)", xs, [
          { name: "queued", color: "#a15c00", ys: s.map((x) => num(x.queued)) },
          { name: "leased or running", color: "#2457c5", ys: s.map((x) => num(x.running)) }]),
        chart("chart-latency", "Submit → start latency (ms)", xs, [
          { name: "average", color: "#2457c5", ys: s.map((x) => num(x.latencyAvgMs)) },
          { name: "max", color: "#a15c00", ys: s.map((x) => num(x.latencyMaxMs)) }])));
  });
  return { stop };
}

// chart draws series as polylines in an SVG of fixed coordinates (scaled by CSS).
function chart(id, title, xs, series) {
  const W = 600, H = 180, L = 44, B = 18, T = 8, R = 8;
  const now = Date.now(), x0 = now - 3600 * 1000;
  const ymax = Math.max(1, ...series.flatMap((s) => s.ys));
  const X = (t) => L + ((t - x0) / (now - x0)) * (W - L - R);
  const Y = (v) => H - B - (v / ymax) * (H - B - T);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": title });
  svg.append(svgEl("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }), svgEl("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (const f of [0, 0.5, 1]) {
    const v = ymax * f;
    svg.append(svgEl("text", { x: L - 4, y: Y(v) + 3, "text-anchor": "end" }, v >= 100 ? v.toFixed(0) : v.toFixed(v >= 10 ? 1 : 2)));
  }
  for (const m of [60, 45, 30, 15, 0]) svg.append(svgEl("text", { x: X(now - m * 60000), y: H - 4, "text-anchor": "middle" }, m ? "-" + m + " min" : "now"));
  for (const s of series) {
    if (xs.length === 0) continue;
    const pts = xs.map((t, i) => X(t).toFixed(1) + "," + Y(s.ys[i]).toFixed(1)).join(" ");
    svg.append(svgEl("polyline", { points: pts, fill: "none", stroke: s.color, "stroke-width": 1.5, "data-series": s.name }));
    const last = xs.length - 1; // the interval so far: a dot, visible even when it is the only sample
    svg.append(svgEl("circle", { cx: X(xs[last]).toFixed(1), cy: Y(s.ys[last]).toFixed(1), r: 3, fill: s.color }));
  }
  const legend = h("div", { class: "legend" }, series.map((s) => {
    const i = h("i");
    i.style.background = s.color;
    return h("span", {}, i, s.name + " (now " + (s.ys.length ? +s.ys[s.ys.length - 1].toFixed(2) : 0) + ")");
  }));
  return h("div", { class: "chart", id }, h("b", {}, title), svg, legend);
}

// ---- sign-in -------------------------------------------------------------------

function signedOut(reason) {
  feed.stop();
  if (current && current.stop) current.stop();
  current = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("#view").replaceChildren();
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#live").textContent = "";
  $("#login").hidden = false;
  $("#login-error").textContent = reason ? "Signed out: " + reason : "";
}

async function signIn() {
  // In dev mode the server checks no token: Status answers without one.
  await call("ClusterService", "Status");
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#logout").hidden = !sessionStorage.getItem(TOKEN_KEY);
  feed.start();
  route();
}

function main() {
  window.addEventListener("hashchange", () => { if ($("#login").hidden) route(); });
  $("#logout").addEventListener("click", () => signedOut(""));
  $("#login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value);
    $("#token").value = "";
    signIn().catch((err) => { if (!(err instanceof APIError && err.code === "unauthenticated")) $("#login-error").textContent = err.message; });
  });
  signIn().catch((err) => {
    if (!(err instanceof APIError && err.code === "unauthenticated")) $("#login-error").textContent = err.message;
    if ($("#login").hidden) signedOut("");
    $("#login-error").textContent = "";
  });
}

main();
