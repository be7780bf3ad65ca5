// The playground: one page over the service's public API. It keeps no state
// of its own beyond the browser's storage (API key, user, last event seen), so
// a reload rebuilds everything from the session's messages and events.

const $ = (id) => document.getElementById(id);
const store = {
  get key() { return localStorage.getItem("cah.key") || ""; },
  set key(v) { v ? localStorage.setItem("cah.key", v) : localStorage.removeItem("cah.key"); },
  get user() { return localStorage.getItem("cah.user") || ""; },
  set user(v) { localStorage.setItem("cah.user", v); },
  get theme() { return localStorage.getItem("cah.theme") || ""; },
  set theme(v) { localStorage.setItem("cah.theme", v); },
  turn(id) {
    try { return JSON.parse(sessionStorage.getItem("cah.turn." + id) || "null"); } catch { return null; }
  },
  setTurn(id, v) {
    v ? sessionStorage.setItem("cah.turn." + id, JSON.stringify(v)) : sessionStorage.removeItem("cah.turn." + id);
  },
};

const state = {
  sessionId: null,
  session: null,
  busy: false,
  abort: null,
  filesPath: "",
  features: { events: null, files: null, permissions: null },
};

// ---------- HTTP ----------

class ApiFailure extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  if (store.key) h["Authorization"] = "Bearer " + store.key;
  return h;
}

async function api(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { "content-type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch { data = { detail: text }; } }
  if (!res.ok) throw new ApiFailure(res.status, data);
  return data;
}

/** Reads an SSE response, calling `onFrame(frame, id)` for each data frame. */
async function readEvents(res, onFrame) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) !== -1) {
      const raw = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      let data = [], id = null;
      for (const line of raw.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        const val = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") data.push(val);
        else if (field === "id") id = val;
      }
      if (data.length) {
        let frame;
        try { frame = JSON.parse(data.join("\n")); } catch { continue; }
        onFrame(frame, id);
      }
    }
  }
}

// ---------- Markdown (a safe subset: everything is escaped first) ----------

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function inline(s) {
  const codes = [];
  s = s.replace(/`([^`]+)`/g, (_, c) => { codes.push(c); return `\u0000${codes.length - 1}\u0000`; });
  s = escapeHtml(s)
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^*\w])\*([^*\s][^*]*)\*(?!\w)/g, "$1<em>$2</em>")
    .replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g, (_, t, u) => `<a href="${u}" rel="noopener noreferrer" target="_blank">${t}</a>`);
  return s.replace(/\u0000(\d+)\u0000/g, (_, i) => `<code>${escapeHtml(codes[+i])}</code>`);
}

function markdown(src) {
  const lines = String(src).replace(/\r\n/g, "\n").split("\n");
  const out = [];
  let para = [], list = null;
  const flushPara = () => { if (para.length) { out.push(`<p>${inline(para.join(" "))}</p>`); para = []; } };
  const flushList = () => { if (list) { out.push(`<${list.tag}>${list.items.map((i) => `<li>${inline(i)}</li>`).join("")}</${list.tag}>`); list = null; } };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(/^\s*```\s*([\w+-]*)/);
    if (fence) {
      flushPara(); flushList();
      const body = [];
      for (i++; i < lines.length && !/^\s*```\s*$/.test(lines[i]); i++) body.push(lines[i]);
      out.push(`<pre><code${fence[1] ? ` data-lang="${escapeHtml(fence[1])}"` : ""}>${escapeHtml(body.join("\n"))}</code></pre>`);
      continue;
    }
    const heading = line.match(/^(#{1,4})\s+(.*)$/);
    if (heading) { flushPara(); flushList(); const n = heading[1].length + 2; out.push(`<h${n}>${inline(heading[2])}</h${n}>`); continue; }
    const bullet = line.match(/^\s*[-*+]\s+(.*)$/);
    const number = line.match(/^\s*\d+[.)]\s+(.*)$/);
    if (bullet || number) {
      flushPara();
      const tag = bullet ? "ul" : "ol";
      if (!list || list.tag !== tag) { flushList(); list = { tag, items: [] }; }
      list.items.push((bullet || number)[1]);
      continue;
    }
    const quote = line.match(/^>\s?(.*)$/);
    if (quote) { flushPara(); flushList(); out.push(`<blockquote>${inline(quote[1])}</blockquote>`); continue; }
    if (!line.trim()) { flushPara(); flushList(); continue; }
    if (list && /^\s{2,}\S/.test(line)) { list.items[list.items.length - 1] += " " + line.trim(); continue; }
    flushList();
    para.push(line.trim());
  }
  flushPara(); flushList();
  return out.join("\n");
}

// ---------- Rendering ----------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "html") node.innerHTML = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function pretty(value) {
  if (typeof value === "string") return value;
  try { return JSON.stringify(value, null, 2); } catch { return String(value); }
}

function toolSummary(name, input) {
  if (!input || typeof input !== "object") return "";
  const first = input.command ?? input.file_path ?? input.path ?? input.pattern ?? input.url ?? input.description ?? input.query;
  if (typeof first !== "string") return "";
  return first.length > 80 ? first.slice(0, 77) + "…" : first;
}

/** The folded view of one tool call; its result is filled in when it arrives. */
function toolCall(id, name, input) {
  const status = el("span", { class: "status" }, "running");
  const result = el("div", { class: "result" });
  const node = el("details", { class: "tool", "data-tool-use-id": id || "" },
    el("summary", {}, el("span", { class: "name" }, name), " ", el("code", {}, toolSummary(name, input)), status),
    el("div", { class: "body" },
      el("div", { class: "label" }, "input"), el("pre", {}, pretty(input)),
      result));
  node.setResult = (content, isError) => {
    status.textContent = isError ? "failed" : "done";
    status.className = "status " + (isError ? "failed" : "ok");
    result.replaceChildren(el("div", { class: "label" }, isError ? "error" : "output"), el("pre", {}, resultText(content)));
  };
  return node;
}

function resultText(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((b) => b.type === "text" ? b.text : b.type === "image" ? "[image]" : b.type === "document" ? "[document]" : pretty(b)).join("\n");
  }
  return pretty(content);
}

/** An assistant step being built (from history or from a stream). */
function assistantMessage() {
  const body = el("div", { class: "parts" });
  const node = el("article", { class: "message assistant" }, el("div", { class: "role" }, "agent"), body);
  let textNode = null, text = "", pending = false, thinking = null;
  const render = () => { pending = false; if (textNode) textNode.innerHTML = markdown(text); };
  node.appendText = (delta) => {
    if (!textNode) { textNode = el("div", { class: "text" }); body.append(textNode); text = ""; }
    text += delta;
    if (!pending) { pending = true; requestAnimationFrame(render); }
  };
  node.appendThinking = (delta) => {
    if (!thinking) {
      thinking = el("pre", {});
      body.append(el("details", { class: "tool thinking" }, el("summary", {}, "thinking"), el("div", { class: "body" }, thinking)));
    }
    thinking.textContent += delta;
  };
  node.addTool = (id, name, input) => { textNode = null; const t = toolCall(id, name, input); body.append(t); return t; };
  node.addError = (message) => body.append(el("p", { class: "error" }, message));
  node.flush = render;
  return node;
}

const conversation = () => $("conversation");
const toolNodes = new Map();

function scrollDown() {
  const c = conversation();
  if (c.scrollHeight - c.scrollTop - c.clientHeight < 200) c.scrollTop = c.scrollHeight;
}

function userMessage(text) {
  return el("article", { class: "message user" }, el("div", { class: "role" }, "you"), el("div", { class: "bubble" }, text));
}

function note(text) {
  return el("div", { class: "message note" }, text);
}

/** Renders stored messages (the Messages API's shape) into the conversation. */
function renderHistory(messages) {
  const c = conversation();
  c.replaceChildren();
  toolNodes.clear();
  let current = null;
  for (const m of messages) {
    const blocks = typeof m.content === "string" ? [{ type: "text", text: m.content }] : (m.content || []);
    if (m.role === "system") {
      if (blocks.some((b) => b.type === "compaction")) c.append(note("Earlier conversation compacted into a summary."));
      current = null;
      continue;
    }
    if (m.role === "user") {
      const texts = blocks.filter((b) => b.type === "text").map((b) => b.text);
      for (const b of blocks) {
        if (b.type === "tool_result" && toolNodes.has(b.tool_use_id)) toolNodes.get(b.tool_use_id).setResult(b.content, b.is_error);
      }
      if (texts.length) { c.append(userMessage(texts.join("\n"))); current = null; }
      const attached = blocks.filter((b) => b.type === "image" || b.type === "document").length;
      if (attached) c.lastChild.append(el("div", { class: "muted" }, `${attached} attachment(s)`));
      continue;
    }
    if (!current) { current = assistantMessage(); c.append(current); }
    for (const b of blocks) {
      if (b.type === "text") current.appendText(b.text);
      else if (b.type === "thinking") current.appendThinking(b.thinking || "");
      else if (b.type === "tool_use" || b.type === "server_tool_use") toolNodes.set(b.id, current.addTool(b.id, b.name, b.input));
    }
    current.flush();
  }
  c.scrollTop = c.scrollHeight;
}

/** Applies one stream frame to the page. Returns true when the turn ended. */
function applyFrame(frame, ctx) {
  const ensure = () => { if (!ctx.message) { ctx.message = assistantMessage(); conversation().append(ctx.message); } return ctx.message; };
  switch (frame.type) {
    case "text_delta": ensure().appendText(frame.text || ""); break;
    case "thinking_delta": ensure().appendThinking(frame.thinking || ""); break;
    case "tool_use": toolNodes.set(frame.tool_use_id, ensure().addTool(frame.tool_use_id, frame.tool_name, frame.tool_input)); break;
    case "tool_result": {
      const node = toolNodes.get(frame.tool_use_id);
      if (node) node.setResult(frame.content ?? frame.output, frame.is_error);
      break;
    }
    case "todos": renderTodos(frame.todos || []); break;
    case "compaction": conversation().append(note("Earlier conversation compacted into a summary.")); ctx.message = null; break;
    case "permission_request": case "question": showRequest(frame); break;
    case "permission_decision": case "question_answered": removeRequest(frame.request_id); break;
    case "user_message": case "turn_started":
      if (frame.text || frame.message) { conversation().append(userMessage(frame.text || frame.message)); ctx.message = null; }
      break;
    case "done":
      if (ctx.message) ctx.message.flush();
      ctx.message = null;
      return true;
    case "error":
      ensure().addError(frame.error || "The turn failed.");
      return true;
    default: break;
  }
  scrollDown();
  return false;
}

function renderTodos(todos) {
  const list = $("todos");
  list.replaceChildren(...todos.map((t) => el("li", { "data-status": t.status },
    t.status === "in_progress" ? (t.activeForm || t.content) : t.content,
    el("span", { class: "visually-hidden" }, ` (${t.status.replace("_", " ")})`))));
  $("todos-empty").hidden = todos.length > 0;
}

function money(usd) { return "$" + (usd || 0).toFixed(4); }

function renderSession(s) {
  state.session = s;
  $("session-header").hidden = false;
  $("session-title").textContent = s.session_id;
  $("session-meta").textContent = `${s.user_id}${s.subdir ? " / " + s.subdir : ""} · ${s.message_count} message(s) · ${s.cwd}`;
  const u = s.usage || {};
  $("usage").textContent = `${(u.input_tokens || 0) + (u.cache_read_input_tokens || 0) + (u.cache_creation_input_tokens || 0)} in · ${u.output_tokens || 0} out · ${money(u.cost_usd)}`;
  renderTodos(s.todos || []);
}

function showNotice(message) {
  const n = $("notice");
  n.textContent = message || "";
  n.hidden = !message;
}

function setBusy(busy, label = "") {
  state.busy = busy;
  $("send-button").disabled = busy;
  $("stop-button").hidden = !busy;
  $("turn-state").textContent = label || (busy ? "The agent is working…" : "");
}

// ---------- Sessions ----------

async function loadSessions() {
  const user = $("user-id").value.trim();
  if (!user) return;
  store.user = user;
  showNotice("");
  let ids;
  try { ids = await api("GET", "/api/v1/sessions?user_id=" + encodeURIComponent(user)); } catch (e) { showNotice(e.message); return; }
  const sessions = (await Promise.all(ids.slice(0, 100).map((id) => api("GET", "/api/v1/sessions/" + id).catch(() => null)))).filter(Boolean);
  sessions.sort((a, b) => b.last_active_at.localeCompare(a.last_active_at));
  const list = $("sessions");
  list.replaceChildren(...sessions.map((s) => el("li", {}, el("button", {
    type: "button", "aria-current": s.session_id === state.sessionId ? "true" : "false", "data-session-id": s.session_id,
    onclick: () => openSession(s.session_id),
  }, el("span", { class: "id" }, s.session_id.slice(0, 8)),
  el("span", { class: "sub" }, `${s.subdir || "(home)"} · ${s.message_count} msg · ${new Date(s.last_active_at).toLocaleString()}`)))));
  $("sessions-empty").hidden = sessions.length > 0;
}

async function createSession(subdir) {
  const user = $("user-id").value.trim();
  if (!user) { $("user-id").focus(); return; }
  store.user = user;
  const body = { user_id: user };
  if (subdir) body.subdir = subdir;
  try {
    const s = await api("POST", "/api/v1/sessions", body);
    await loadSessions();
    await openSession(s.session_id);
  } catch (e) { showNotice(e.message); }
}

async function openSession(id) {
  if (state.abort) state.abort.abort();
  state.sessionId = id;
  history.replaceState(null, "", "#session=" + id);
  for (const b of document.querySelectorAll("#sessions button")) b.setAttribute("aria-current", b.dataset.sessionId === id ? "true" : "false");
  $("pick-hint").hidden = true;
  $("composer").hidden = false;
  $("approvals").replaceChildren();
  showNotice("");
  setBusy(false);
  let session;
  try { session = await api("GET", "/api/v1/sessions/" + id); } catch (e) { showNotice(e.message); return; }
  if (!$("user-id").value) $("user-id").value = session.user_id;
  renderSession(session);
  const messages = await api("GET", `/api/v1/sessions/${id}/messages`).catch(() => []);
  const saved = store.turn(id);
  const running = session.turn && session.turn !== "idle";
  if (running && saved && state.features.events !== false) {
    // A turn started from this tab is still running: show the history before
    // it, then replay the turn's events from its start and follow them.
    renderHistory(messages.filter((m) => m.seq <= saved.seqBefore));
    conversation().append(userMessage(saved.message));
    followEvents(id, saved.after);
  } else {
    renderHistory(messages);
    if (running) followEvents(id, null);
  }
  loadPending(id);
  state.filesPath = "";
  loadFiles();
}

async function refreshSession() {
  if (!state.sessionId) return;
  try { renderSession(await api("GET", "/api/v1/sessions/" + state.sessionId)); } catch { /* shown on the next action */ }
}

// ---------- Turns ----------

async function send(message) {
  const id = state.sessionId;
  if (!id || state.busy || !message.trim()) return;
  showNotice("");
  const messages = await api("GET", `/api/v1/sessions/${id}/messages`).catch(() => []);
  const seqBefore = messages.length ? messages[messages.length - 1].seq : 0;
  conversation().append(userMessage(message));
  scrollDown();
  setBusy(true);
  const abort = new AbortController();
  state.abort = abort;
  const ctx = { message: null };
  let ended = false, first = true;
  try {
    const res = await fetch("/api/v1/chat/stream", {
      method: "POST",
      headers: headers({ "content-type": "application/json", accept: "text/event-stream" }),
      body: JSON.stringify({ session_id: id, message }),
      signal: abort.signal,
    });
    if (!res.ok) {
      const body = await res.json().catch(() => null);
      throw new ApiFailure(res.status, body);
    }
    await readEvents(res, (frame, eventId) => {
      if (first && eventId !== null && /^\d+$/.test(eventId)) {
        store.setTurn(id, { after: Number(eventId) - 1, seqBefore, message });
      }
      first = false;
      if (applyFrame(frame, ctx)) ended = true;
    });
  } catch (e) {
    if (e.name === "AbortError") return;
    showNotice(e.message);
  } finally {
    if (state.abort === abort) state.abort = null;
  }
  if (ended) store.setTurn(id, null);
  setBusy(false);
  refreshSession();
  loadFiles();
}

/** Follows a running turn through the session's event log (after a reload). */
async function followEvents(id, after) {
  setBusy(true, "Reconnected: the agent is working…");
  const abort = new AbortController();
  state.abort = abort;
  const ctx = { message: null };
  const query = after === null ? "" : "?after=" + after;
  let ended = false;
  try {
    const res = await fetch(`/api/v1/sessions/${id}/events${query}`, { headers: headers({ accept: "text/event-stream" }), signal: abort.signal });
    if (res.status === 404 || res.status === 405) {
      state.features.events = false;
      await waitUntilIdle(id, abort.signal);
    } else if (!res.ok) {
      throw new ApiFailure(res.status, await res.json().catch(() => null));
    } else {
      state.features.events = true;
      await readEvents(res, (frame) => { if (applyFrame(frame, ctx)) ended = true; });
    }
  } catch (e) {
    if (e.name === "AbortError") return;
    showNotice(e.message);
  } finally {
    if (state.abort === abort) state.abort = null;
  }
  if (state.sessionId !== id) return;
  if (ended || state.features.events === false) store.setTurn(id, null);
  setBusy(false);
  if (state.features.events === false) {
    renderHistory(await api("GET", `/api/v1/sessions/${id}/messages`).catch(() => []));
  }
  refreshSession();
  loadFiles();
}

async function waitUntilIdle(id, signal) {
  for (;;) {
    await new Promise((r) => setTimeout(r, 1000));
    if (signal.aborted) throw new DOMException("aborted", "AbortError");
    const s = await api("GET", "/api/v1/sessions/" + id);
    if (!s.turn || s.turn === "idle") return;
  }
}

async function stop() {
  if (!state.sessionId) return;
  try { await api("POST", `/api/v1/sessions/${state.sessionId}/interrupt`); } catch (e) { showNotice(e.message); }
}

// ---------- Approvals and questions ----------

function requestCard(frame) {
  const id = frame.request_id;
  const collection = frame.type === "question" ? "questions" : "permissions";
  const answer = async (body) => {
    try {
      await api("POST", `/api/v1/sessions/${state.sessionId}/${collection}/${encodeURIComponent(id)}`, body);
      removeRequest(id);
    } catch (e) { showNotice(e.message); }
  };
  const input = frame.tool_input || frame.input || {};
  const questions = frame.type === "question" ? (frame.questions || input.questions || []) : [];
  if (questions.length) {
    const fields = questions.map((q, i) => {
      const name = `q-${id}-${i}`;
      const options = (q.options || []).map((o) => el("label", { class: "row" },
        el("input", { type: q.multiSelect ? "checkbox" : "radio", name, value: o.label }), o.label,
        o.description ? el("span", { class: "muted" }, " — " + o.description) : null));
      return el("fieldset", {}, el("legend", {}, q.question), ...options,
        el("label", { class: "row" }, "Other: ", el("input", { name: name + "-other" })));
    });
    const form = el("form", { class: "stack" }, ...fields, el("div", { class: "row end" }, el("button", { type: "submit" }, "Answer")));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const answers = {};
      questions.forEach((q, i) => {
        const name = `q-${id}-${i}`;
        const picked = [...form.querySelectorAll(`input[name="${name}"]:checked`)].map((x) => x.value);
        const other = form.querySelector(`input[name="${name}-other"]`).value.trim();
        if (other) picked.push(other);
        answers[q.question] = picked.join(", ");
      });
      answer({ answers });
    });
    return el("div", { class: "approval", "data-request-id": id }, el("strong", {}, "The agent asks"), form);
  }
  const message = el("input", { placeholder: "Reason (optional, shown to the agent when denied)", "aria-label": "Reason" });
  return el("div", { class: "approval", "data-request-id": id, role: "group", "aria-label": `Approve ${frame.tool_name}` },
    el("div", {}, el("strong", {}, frame.tool_name), " wants to run:"),
    el("pre", {}, pretty(input)),
    el("div", { class: "row" }, message,
      el("button", { type: "button", class: "secondary", onclick: () => answer({ decision: "deny", message: message.value || undefined }) }, "Deny"),
      el("button", { type: "button", class: "secondary", onclick: () => answer({ decision: "allow", remember: "session" }) }, "Allow for this session"),
      el("button", { type: "button", onclick: () => answer({ decision: "allow" }) }, "Allow")));
}

function showRequest(frame) {
  if (!frame.request_id || document.querySelector(`[data-request-id="${CSS.escape(frame.request_id)}"]`)) return;
  $("approvals").append(requestCard(frame));
  $("turn-state").textContent = "Waiting for you…";
}

function removeRequest(id) {
  const node = document.querySelector(`[data-request-id="${CSS.escape(String(id))}"]`);
  if (node) node.remove();
  if (state.busy && !$("approvals").children.length) $("turn-state").textContent = "The agent is working…";
}

async function loadPending(id) {
  if (state.features.permissions === false) return;
  for (const [collection, type] of [["permissions", "permission_request"], ["questions", "question"]]) {
    try {
      const pending = await api("GET", `/api/v1/sessions/${id}/${collection}`);
      state.features.permissions = true;
      for (const p of Array.isArray(pending) ? pending : []) {
        showRequest({ type, questions: p.tool_input && p.tool_input.questions, ...p });
      }
    } catch (e) {
      if (e.status === 404 && e.code === "not_found") state.features.permissions = false;
    }
  }
}

// ---------- Files ----------

function size(n) {
  if (n === undefined || n === null) return "";
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1024 / 1024).toFixed(1) + " MiB";
}

function filesUrl(path) {
  const parts = path.split("/").filter(Boolean).map(encodeURIComponent);
  const base = `/api/v1/sessions/${state.sessionId}/files`;
  return parts.length ? base + "/" + parts.join("/") : base;
}

async function loadFiles() {
  if (!state.sessionId || state.features.files === false) return;
  const path = state.filesPath;
  let listing;
  try {
    const res = await fetch(filesUrl(path), { headers: headers({ accept: "application/json" }) });
    if (res.status === 404 && path === "") {
      const body = await res.json().catch(() => ({}));
      if (body.error === "not_found") { state.features.files = false; $("files-section").hidden = true; return; }
    }
    if (!res.ok) throw new ApiFailure(res.status, await res.json().catch(() => null));
    listing = await res.json();
  } catch (e) { $("files-note").textContent = e.message; return; }
  state.features.files = true;
  const entries = Array.isArray(listing) ? listing : (listing.entries || []);
  entries.sort((a, b) => (a.kind === "dir" ? 0 : 1) - (b.kind === "dir" ? 0 : 1) || a.name.localeCompare(b.name));
  $("files-path").textContent = "/" + path;
  const rows = [];
  if (path) rows.push(el("li", {}, el("button", { type: "button", onclick: () => { state.filesPath = path.split("/").slice(0, -1).join("/"); loadFiles(); } }, "..")));
  for (const e of entries) {
    const full = path ? path + "/" + e.name : e.name;
    const open = e.kind === "dir"
      ? () => { state.filesPath = full; loadFiles(); }
      : () => download(full, e.name);
    rows.push(el("li", {}, el("button", { type: "button", onclick: open }, e.kind === "dir" ? e.name + "/" : e.name),
      el("span", { class: "size" }, e.kind === "dir" ? "" : size(e.size))));
  }
  $("files").replaceChildren(...rows);
  $("files-note").textContent = entries.length ? "" : "Empty.";
}

async function download(path, name) {
  try {
    const res = await fetch(filesUrl(path), { headers: headers() });
    if (!res.ok) throw new ApiFailure(res.status, await res.json().catch(() => null));
    const url = URL.createObjectURL(await res.blob());
    const a = el("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) { showNotice(e.message); }
}

// ---------- Wiring ----------

/** What this service offers, from its OpenAPI document, so the page asks
 * only for endpoints that exist. */
async function discoverFeatures() {
  try {
    const doc = await api("GET", "/openapi.json");
    const paths = Object.keys(doc.paths || {});
    state.features.events = paths.some((p) => p.endsWith("/events"));
    state.features.files = paths.some((p) => p.includes("/files"));
    state.features.permissions = paths.some((p) => p.includes("/permissions"));
  } catch { /* keep probing lazily */ }
  $("files-section").hidden = state.features.files === false;
}

function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme; else delete document.documentElement.dataset.theme;
  const dark = theme ? theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  $("theme-button").textContent = dark ? "Light" : "Dark";
  $("theme-button").setAttribute("aria-pressed", String(dark));
}

async function start() {
  applyTheme(store.theme);
  $("theme-button").addEventListener("click", () => {
    const dark = document.documentElement.dataset.theme === "dark" ||
      (!document.documentElement.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
    store.theme = dark ? "light" : "dark";
    applyTheme(store.theme);
  });
  $("key-button").addEventListener("click", () => { $("key-input").value = store.key; $("key-dialog").showModal(); });
  $("key-dialog").addEventListener("close", () => {
    const v = $("key-dialog").returnValue;
    if (v === "save") store.key = $("key-input").value.trim();
    if (v === "clear") store.key = "";
    loadSessions();
  });
  $("user-form").addEventListener("submit", (e) => { e.preventDefault(); loadSessions(); });
  $("new-session-form").addEventListener("submit", (e) => { e.preventDefault(); createSession($("subdir").value.trim()); $("subdir").value = ""; });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("composer-input");
    const text = input.value;
    if (!text.trim() || state.busy) return;
    input.value = "";
    send(text);
  });
  $("composer-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("stop-button").addEventListener("click", stop);
  $("files-refresh").addEventListener("click", loadFiles);

  api("GET", "/").then((info) => { $("service").textContent = "v" + info.version; }).catch(() => {});
  await discoverFeatures();
  $("user-id").value = store.user;
  const fromHash = location.hash.match(/session=([0-9a-fA-F-]{36})/);
  if (store.user) await loadSessions();
  if (fromHash) await openSession(fromHash[1]);
}

start();
