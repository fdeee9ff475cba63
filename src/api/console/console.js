// The roomcast console: reads and acts through the API with the session cookie the sign-in
// set (the token itself is never kept by the page).
"use strict";

const REFRESH_MS = 2000;
const HISTORY_MS = 5 * 60 * 1000;
const STEPS = ["queued", "starting", "active", "stopping", "delivering", "completed"];
const STOP_PATH = { recording: "live-recording", streaming: "streaming", individual: "recording" };
const REQUESTER = { client_id: "console", role: "moderator" };

const state = {
  access: null,
  tab: "jobs",
  cards: new Map(),   // job id -> card element
  history: new Map(), // job/participant/kind -> [{t, fps, kbps, lost, freezes}]
  archive: [],
  jobs: [],
  timer: null,
};

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, props = {}, ...kids) => {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const k of kids) e.append(k);
  return e;
};

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = {};
  try { data = await res.json(); } catch (_) { /* not JSON */ }
  if (res.status === 401 && path !== "/console/sign-in") {
    showSignIn("Your session ended: sign in again.");
    throw new Error("signed out");
  }
  if (!res.ok || (data.result && data.result !== 0)) {
    const e = new Error(`${data.result || res.status}: ${data.msg || res.statusText}`);
    e.code = data.result;
    throw e;
  }
  return data;
}

// ---------- formatting (local time zone) ----------
const time = (ms) => ms ? new Date(ms).toLocaleTimeString() : "—";
const dateTime = (ms) => ms ? new Date(ms).toLocaleString() : "—";
const secs = (s) => {
  s = Math.round(s || 0);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? `${h}:${String(m).padStart(2, "0")}` : `${m}`) + `:${String(r).padStart(2, "0")}`;
};
const bytes = (n) => {
  if (!n) return "—";
  const u = ["B", "KB", "MB", "GB"]; let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
};

// ---------- sign-in ----------
function showSignIn(message) {
  clearInterval(state.timer);
  state.timer = null;
  $("#loading").hidden = true;
  $("#tabs").hidden = true;
  $("#who").hidden = true;
  document.querySelectorAll(".tab").forEach((t) => (t.hidden = true));
  $("#sign-in").hidden = false;
  $("#sign-in-error").textContent = message || "";
}

async function signIn(ev) {
  ev.preventDefault();
  const token = $("#token");
  try {
    const r = await api("POST", "/console/sign-in", { token: token.value });
    token.value = "";
    start(r.access);
  } catch (e) {
    $("#sign-in-error").textContent = e.code ? "Wrong token." : `Could not sign in: ${e.message}`;
  }
}

async function signOut() {
  try { await api("DELETE", "/console/session"); } catch (_) { /* gone anyway */ }
  showSignIn("Signed out.");
}

function start(access) {
  state.access = access;
  $("#sign-in").hidden = true;
  $("#tabs").hidden = false;
  $("#who").hidden = false;
  $("#access").textContent = access === "read" ? "read-only" : "operator";
  document.body.dataset.access = access;
  showTab(state.tab);
  refresh();
  state.timer = setInterval(refresh, REFRESH_MS);
}

function showTab(name) {
  state.tab = name;
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("on", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((t) => (t.hidden = t.id !== name));
  if (name === "archive") renderArchive();
}

// ---------- refresh ----------
let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const [jobs, health, workers, recordings, hooks] = await Promise.all([
      api("GET", "/v1/jobs"), api("GET", "/v1/health"), api("GET", "/v1/workers"),
      api("GET", "/v1/recordings?kind=all"), api("GET", "/v1/webhooks"),
    ]);
    state.jobs = jobs.jobs;
    state.archive = recordings.files || [];
    renderJobs(jobs.jobs);
    renderFleet(health, workers.workers, jobs.jobs, jobs.waiting);
    if (state.tab === "archive") renderArchive();
    renderDeliveries(jobs.jobs, state.archive);
    renderWebhooks(hooks);
    $("#error").hidden = true;
    $("#updated").textContent = `updated ${time(Date.now())}`;
  } catch (e) {
    if (e.message !== "signed out") {
      $("#error").textContent = `Could not refresh: ${e.message}`;
      $("#error").hidden = false;
    }
  } finally {
    $("#loading").hidden = true;
    refreshing = false;
  }
}

// ---------- rooms and jobs ----------
function renderJobs(jobs) {
  const running = jobs.filter((j) => !["completed", "failed", "cancelled"].includes(j.state));
  const list = $("#job-list");
  for (const [id, card] of state.cards) {
    if (!running.some((j) => j.id === id)) {
      const img = $("img", card);
      if (img.src) URL.revokeObjectURL(img.src);
      if (card.hls) card.hls.destroy();
      card.remove();
      state.cards.delete(id);
    }
  }
  for (const job of running) {
    let card = state.cards.get(job.id);
    if (!card) {
      card = makeCard(job);
      state.cards.set(job.id, card);
      list.append(card);
    }
    updateCard(card, job);
  }
  $("#job-count").textContent = running.length ? `(${running.length})` : "";
  $("#no-jobs").hidden = running.length > 0;
}

function makeCard(job) {
  const card = $("#job-card").content.firstElementChild.cloneNode(true);
  card.dataset.job = job.id;
  card.dataset.room = job.spec.room_id;
  const stop = $(".stop", card);
  const layout = $(".layout", card);
  const path = STOP_PATH[job.spec.kind];
  stop.hidden = !path;
  $(".layout-box", card).hidden = !["recording", "streaming"].includes(job.spec.kind);
  stop.addEventListener("click", () => act(card, "DELETE", `/v1/rooms/${enc(job.spec.room_id)}/${path}`,
    { requested_by: REQUESTER }, "stop sent"));
  const apply = $(".apply-layout", card);
  const preview = $(".layout-preview", card);
  layout.addEventListener("change", () => {
    apply.disabled = !layout.value || state.access === "read";
    preview.hidden = !layout.value;
    if (!layout.value) return;
    // What it will look like with this room's people, drawn by the real compositor.
    const n = Math.min(49, Math.max(1, Number(card.dataset.people) || 4));
    preview.src = `/v1/layouts/${enc(layout.value)}/preview.png?participants=${n}`;
  });
  apply.addEventListener("click", () => {
    if (!layout.value) return;
    const body = job.spec.kind === "streaming"
      ? { requested_by: REQUESTER, layout: layout.value }
      : { requested_by: REQUESTER, config: { url_details: { layout: layout.value } } };
    act(card, "PATCH", `/v1/rooms/${enc(job.spec.room_id)}/${STOP_PATH[job.spec.kind]}`, body,
      `layout ${layout.value} sent`);
  });
  const add = $(".rtmp-add", card);
  add.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const url = $("input", add).value.trim();
    if (!url) return;
    act(card, "PATCH", `/v1/rooms/${enc(job.spec.room_id)}/streaming`,
      { requested_by: REQUESTER, add_rtmp_urls: [url] }, "destination sent");
    $("input", add).value = "";
  });
  if (state.access === "read") card.querySelectorAll(".actions button, .actions select").forEach((b) => (b.disabled = true));
  return card;
}

const enc = encodeURIComponent;

async function act(card, method, path, body, done) {
  const out = $(".action-result", card);
  out.className = "action-result muted";
  out.textContent = "sending…";
  try {
    const r = await api(method, path, body);
    out.textContent = `${done} (${r.result})`;
    refresh();
  } catch (e) {
    out.className = "action-result error";
    out.textContent = e.message;
  }
}

function updateCard(card, job) {
  card.dataset.state = job.state;
  $(".room", card).textContent = job.spec.room_id;
  $(".kind", card).textContent = job.spec.kind;
  const st = $(".state", card);
  st.textContent = job.state;
  st.className = `state badge state-${job.state}`;
  const tl = $(".timeline", card);
  const at = STEPS.indexOf(job.state);
  if (tl.dataset.at !== String(at)) {
    tl.dataset.at = String(at);
    tl.replaceChildren(...STEPS.map((s, i) =>
      el("li", { className: i < at ? "done" : i === at ? "now" : "", textContent: s })));
  }
  const people = job.people || [];
  card.dataset.people = String(people.length);
  const talking = people.filter((p) => p.talking).map((p) => p.name);
  $(".meta", card).textContent = [
    `started ${time(job.started_ms)}`,
    job.started_ms ? `running ${secs((Date.now() - job.started_ms) / 1000)}` : null,
    `worker ${job.worker || "—"}`,
    `${people.length} participant${people.length === 1 ? "" : "s"}`,
    talking.length ? `talking: ${talking.join(", ")}` : null,
    job.realtime_factor ? `speed ${job.realtime_factor.toFixed(2)}×` : null,
  ].filter(Boolean).join(" · ");
  $(".people", card).replaceChildren(...people.map((p) => {
    const li = el("li", { textContent: p.name, title: p.talking ? "talking" : p.audible ? "heard" : "not heard (muted, paused or no microphone)" });
    li.classList.toggle("talking", !!p.talking);
    li.classList.toggle("silent", !p.audible);
    li.dataset.id = p.id;
    return li;
  }));
  const streaming = job.spec.kind === "streaming";
  // Destinations taken out stay in the record as "stopped": the page shows the others.
  const dests = (job.destinations || []).filter((d) => d.state !== "stopped" || !streaming);
  $(".destinations", card).replaceChildren(...dests.map((d) => {
    const li = el("li", { textContent: `${d.url} — ${d.state}${d.last_error ? ` (${d.last_error})` : ""}` });
    li.dataset.id = String(d.id);
    li.dataset.state = d.state;
    if (streaming && dests.length > 1) {
      const rm = el("button", { textContent: "Remove", disabled: state.access === "read" });
      rm.addEventListener("click", () => act(card, "PATCH", `/v1/rooms/${enc(job.spec.room_id)}/streaming`,
        { requested_by: REQUESTER, remove_destinations: [d.id] }, `destination ${d.id} removal sent`));
      li.append(rm);
    }
    return li;
  }));
  $(".rtmp-add", card).hidden = !streaming || dests.length >= 3 || state.access === "read";
  const hls = job.hls ? [el("li", { textContent: `HLS: ${job.hls.state}, ${job.hls.segments} segments` })] : [];
  $(".segments", card).replaceChildren(...hls, ...(job.segments || []).map((s) =>
    el("li", { textContent: `${s.file_name} — ${s.status}${s.duration_s ? `, ${secs(s.duration_s)}` : ""}` })));
  updateFeeds(card, job);
  updateThumbnail(card, job);
  updatePreview(card, job);
}

// ---------- live HLS preview (hls.js, bundled) ----------
let hlsLoading = null;
function loadHls() {
  if (!hlsLoading) {
    hlsLoading = new Promise((resolve, reject) => {
      const s = el("script", { src: "/console/hls.light.min.js" });
      s.onload = () => resolve(window.Hls);
      s.onerror = () => reject(new Error("hls.js did not load"));
      document.head.append(s);
    });
  }
  return hlsLoading;
}

async function updatePreview(card, job) {
  const v = $("video.hls", card);
  const local = job.hls && job.hls.playlist && (job.hls.playlist_url || "").startsWith("file://");
  if (!local || job.hls.segments < 1 || v.dataset.started) return;
  v.dataset.started = "1";
  v.hidden = false;
  const src = `/v1/jobs/${enc(job.id)}/hls/${enc(job.hls.playlist)}`;
  // hls.js over Media Source Extensions wherever the browser has them; a browser's own HLS
  // player (Safari) otherwise.
  const Hls = await loadHls().catch(() => null);
  if (!Hls || !Hls.isSupported()) {
    if (v.canPlayType("application/vnd.apple.mpegurl")) {
      v.src = src;
      v.onerror = () => { v.dataset.error = v.error ? v.error.message || String(v.error.code) : "error"; };
    } else {
      v.replaceWith(el("p", { className: "muted", textContent: "This browser cannot play HLS." }));
      return;
    }
  } else {
    const hls = new Hls({ liveSyncDurationCount: 2 });
    hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) v.dataset.error = d.details; });
    hls.loadSource(src);
    hls.attachMedia(v);
    card.hls = hls;
  }
  v.play().catch(() => { /* muted autoplay may still be refused: the user presses play */ });
}

async function updateThumbnail(card, job) {
  if (!["active", "starting", "stopping"].includes(job.state)) return;
  const img = $("img", card);
  try {
    const res = await fetch(`/v1/jobs/${enc(job.id)}/thumbnail`, { credentials: "same-origin", cache: "no-store" });
    if (!res.ok) return;
    const url = URL.createObjectURL(await res.blob());
    // The new picture replaces the old once decoded: nothing flickers.
    const next = new Image();
    next.onload = () => {
      const old = img.src;
      img.src = url;
      img.dataset.updated = String(Date.now());
      if (old) URL.revokeObjectURL(old);
    };
    next.onerror = () => URL.revokeObjectURL(url);
    next.src = url;
  } catch (_) { /* next round */ }
}

// ---------- feed health: the last five minutes, kept by the page ----------
const SERIES = [["fps", "fps"], ["kbps", "kbit/s"], ["lost", "packets lost"], ["freezes", "freezes"]];

function updateFeeds(card, job) {
  const now = Date.now();
  const body = $(".feeds tbody", card);
  const rows = [];
  for (const f of job.feeds || []) {
    const key = `${job.id}/${f.participant}/${f.kind}`;
    const h = state.history.get(key) || [];
    const prev = h[h.length - 1];
    const lost = prev ? Math.max(0, f.packets_lost - prev.total_lost) : 0;
    if (!prev || now - prev.t >= REFRESH_MS / 2) {
      h.push({ t: now, fps: f.fps, kbps: f.bitrate_kbps, lost, freezes: f.freezes, total_lost: f.packets_lost });
    }
    while (h.length && now - h[0].t > HISTORY_MS) h.shift();
    state.history.set(key, h);
    let row = body.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
    if (!row) {
      row = el("tr");
      row.dataset.key = key;
      const who = (job.people || []).find((p) => p.id === f.participant);
      row.append(el("td", { textContent: who ? who.name : f.participant }), el("td", { textContent: f.kind }));
      for (const [name, label] of SERIES) {
        const c = el("canvas", { width: 90, height: 22, title: label });
        c.dataset.series = name;
        row.append(el("td", { className: "plot" }, c, el("span", { className: "num muted" })));
      }
    }
    row.classList.toggle("error", !!f.degraded);
    SERIES.forEach(([name], i) => {
      const td = row.children[2 + i];
      plot($("canvas", td), h.map((p) => p[name]));
      const last = h[h.length - 1][name];
      $("span", td).textContent = ` ${Number.isInteger(last) ? last : last.toFixed(1)}`;
    });
    rows.push(row);
  }
  body.replaceChildren(...rows);
}

function plot(canvas, values) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  canvas.dataset.points = String(values.length);
  if (!values.length) return;
  const max = Math.max(...values, 1e-9);
  const step = w / Math.max(HISTORY_MS / REFRESH_MS - 1, 1);
  const x0 = w - step * (values.length - 1);
  ctx.strokeStyle = "#2f6fde";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = x0 + i * step, y = h - 2 - (v / max) * (h - 4);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
}

// ---------- fleet ----------
function renderFleet(health, workers, jobs, waiting) {
  const used = workers.reduce((a, w) => a + w.used, 0);
  const budget = workers.reduce((a, w) => a + w.budget, 0);
  $("#fleet-summary").replaceChildren(
    stat("workers", workers.length), stat("cores used", `${used.toFixed(2)} / ${budget.toFixed(1)}`),
    stat("cores free", health.capacity_free.toFixed(2)), stat("waiting", health.queue_depth),
    stat("store", health.store));
  $("#workers tbody").replaceChildren(...workers.map((w) => {
    const bar = el("div", { className: "bar" }, el("i"));
    bar.firstChild.style.width = `${Math.min(100, (100 * w.used) / (w.budget || 1)).toFixed(0)}%`;
    return el("tr", {},
      el("td", { textContent: w.id }),
      el("td", {}, bar, el("span", { className: "muted", textContent: `${w.used.toFixed(2)} of ${w.budget.toFixed(1)} cores` })),
      el("td", { className: "num", textContent: w.free.toFixed(2) }),
      el("td", { className: "num", textContent: w.jobs.length }),
      el("td", { textContent: w.draining ? "draining" : w.disk_low ? "disk low" : "ready" }),
      el("td", { textContent: time(w.heartbeat_ms) }));
  }));
  const byId = new Map(jobs.map((j) => [j.id, j]));
  const rows = (waiting || []).map((id) => byId.get(id)).filter(Boolean).map((j) => {
    const cancel = el("button", { textContent: "Cancel", disabled: state.access === "read" });
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try { await api("DELETE", `/v1/jobs/${enc(j.id)}`); refresh(); } catch (e) { cancel.title = e.message; cancel.disabled = false; }
    });
    return el("tr", {}, el("td", { textContent: j.spec.room_id }), el("td", { textContent: j.spec.kind }),
      el("td", { textContent: time(j.created_ms) }), el("td", {}, cancel));
  });
  $("#waiting tbody").replaceChildren(...rows);
  $("#no-waiting").hidden = rows.length > 0;
}

const stat = (label, value) => el("div", {}, el("b", { textContent: String(value) }), el("span", { className: "muted", textContent: label }));

// ---------- archive ----------
function renderArchive() {
  const room = $("#archive-room").value.trim();
  const entries = state.archive
    .filter((e) => !room || e.room_id.includes(room))
    .sort((a, b) => b.started_ms - a.started_ms);
  $("#recordings tbody").replaceChildren(...entries.map((e) => {
    const play = el("button", { textContent: "Play", disabled: !playable(e) });
    play.addEventListener("click", () => playEntry(e));
    const link = readable(e)
      ? el("a", { href: `${mediaPath(e)}?download=1`, textContent: "download" })
      : el("span", { className: "muted", textContent: e.url || "—" });
    const row = el("tr", {},
      el("td", { textContent: e.room_id }), el("td", { textContent: dateTime(e.started_ms) }),
      el("td", { className: "num", textContent: secs(e.duration_s) }), el("td", { className: "num", textContent: bytes(e.size) }),
      el("td", { textContent: e.status }), el("td", {}, el("div", { textContent: e.file_name }), link), el("td", {}, play));
    row.dataset.file = e.file_name;
    return row;
  }));
}

// Files kept on the API's machine or in its storage (S3, SFTP) play through the API (byte
// ranges).
const mediaPath = (e) => `/v1/recordings/${enc(e.job_id)}/${enc(e.file_name)}/media`;
const readable = (e) => typeof e.url === "string" && /^(file|s3|sftp):\/\//.test(e.url);
const playable = (e) => readable(e) && /\.mp4$/.test(e.file_name);

function playEntry(e) {
  const v = $("#player");
  $("#player-box").hidden = false;
  $("#player-title").textContent = `${e.room_id} — ${e.file_name}`;
  $("#player-error").textContent = "";
  v.onerror = () => { $("#player-error").textContent = `Cannot play: ${v.error ? v.error.message || v.error.code : "error"}`; };
  v.src = mediaPath(e);
  v.play().catch(() => { /* the user presses play */ });
}

// ---------- deliveries ----------
function renderDeliveries(jobs, archive) {
  const rows = [];
  for (const j of jobs) {
    for (const s of j.segments || []) {
      if (["spooled", "kept", "unreadable", "missing"].includes(s.status) || s.delivery_error) {
        rows.push([j.spec.room_id, s.file_name, s.status, s.delivery_error]);
      }
    }
  }
  for (const e of archive) {
    if (e.delivery_error && !rows.some((r) => r[1] === e.file_name)) rows.push([e.room_id, e.file_name, e.status, e.delivery_error]);
  }
  $("#delivery-list tbody").replaceChildren(...rows.map(([room, file, status, err]) => el("tr", {},
    el("td", { textContent: room }), el("td", { textContent: file }), el("td", { textContent: status }),
    el("td", { textContent: err ? err.code : "" }), el("td", { className: "num", textContent: err ? err.attempts : "" }),
    el("td", { textContent: err ? err.msg : "" }))));
  $("#no-deliveries").hidden = rows.length > 0;
}

function renderWebhooks(hooks) {
  const rows = hooks.webhooks.map((w) => {
    const row = el("tr", {},
      el("td", { textContent: w.event }), el("td", { textContent: w.room_id }),
      el("td", { textContent: time(w.created_unix_ms) }), el("td", { className: "num", textContent: w.attempts }),
      el("td", { textContent: w.given_up ? "given up" : time(w.next_attempt_unix_ms) }),
      el("td", { className: w.last_error ? "error" : "", textContent: w.last_error || "" }));
    row.dataset.id = w.id;
    return row;
  });
  $("#webhook-list tbody").replaceChildren(...rows);
  const none = $("#no-webhooks");
  none.hidden = rows.length > 0;
  none.textContent = hooks.configured ? "No webhook waits for its receiver." : "No webhook receiver is configured (ROOMCAST_WEBHOOK_URL).";
}

// ---------- boot ----------
document.addEventListener("DOMContentLoaded", async () => {
  $("#sign-in-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", signOut);
  $("#archive-room").addEventListener("input", renderArchive);
  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
  try {
    const r = await fetch("/console/session", { credentials: "same-origin" });
    if (r.ok) start((await r.json()).access);
    else showSignIn();
  } catch (e) {
    showSignIn(`The API does not answer: ${e.message}`);
  }
});
