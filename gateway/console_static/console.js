// toolcall console: chat (ChatStream as NDJSON), async results and tools (one WebSocket),
// and an invoke form generated from each tool's JSON Schema. Plain ES module, no build step.
// Everything from the server is put on the page with textContent, never as HTML.

const $ = (id) => document.getElementById(id);
const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
const params = new URLSearchParams(location.search);

const state = {
  token: sessionStorage.getItem("toolcall.token") || "",
  session: params.get("session") || localStorage.getItem("toolcall.session") || newSessionId(),
  role: params.get("role") || localStorage.getItem("toolcall.role") || "",
  provider: params.get("provider") ?? (localStorage.getItem("toolcall.provider") || ""),
  ws: null,
  wsDelay: 500,
  tools: new Map(),        // name -> tool definition (the role's current list)
  selected: "",            // tool shown in the detail pane
  shownTasks: new Set(),   // task ids on screen (Subscribe may send one again)
  pendingAcks: new Set(),  // shown while the tab was hidden: acknowledged once visible
  busy: false,
};

function newSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function pretty(value) {
  if (value === undefined) return "null";
  return JSON.stringify(value, null, 2);
}

function prettyRaw(raw) {
  try { return pretty(JSON.parse(raw)); } catch { return raw || "{}"; }
}

function shortTime(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "";
}

// -- HTTP ------------------------------------------------------------------------

function headers(extra = {}) {
  const h = { ...extra };
  if (state.token) h.authorization = "Bearer " + state.token;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401) askToken();
  return response;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error || response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// -- token -------------------------------------------------------------------------

function askToken() {
  state.token = "";
  sessionStorage.removeItem("toolcall.token");
  $("token-gate").hidden = false;
  $("token-input").focus();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token-input").value.trim();
  sessionStorage.setItem("toolcall.token", state.token);
  $("token-gate").hidden = true;
  connect();
  loadHistory();
});

// -- rendering results ------------------------------------------------------------------

function renderParts(parts) {
  if (!parts || !parts.length) return null;
  const box = el("div", { class: "parts" });
  for (const part of parts) {
    if (part.image && IMAGE_TYPES.has(part.image.mime_type)) {
      box.append(el("img", { src: `data:${part.image.mime_type};base64,${part.image.data}`, alt: "image from the tool" }));
    } else if (part.text !== undefined) {
      box.append(el("pre", { text: part.text }));
    } else if (part.audio) {
      box.append(el("div", { class: "file", text: `🔊 audio (${part.audio.mime_type})` }));
    } else if (part.resource) {
      const r = part.resource;
      box.append(el("div", { class: "file", text: `📄 ${r.name || r.uri || "resource"}${r.mime_type ? " (" + r.mime_type + ")" : ""}` }));
    } else if (part.image) {
      box.append(el("div", { class: "file", text: `🖼 image (${part.image.mime_type})` }));
    }
  }
  return box;
}

function renderResult(result, into) {
  result = result || {};
  if (result.is_error) into.append(el("div", { class: "errtext", text: result.error || "error" }));
  if (result.output !== undefined || !result.is_error) into.append(el("pre", { class: "output", text: pretty(result.output) }));
  const parts = renderParts(result.parts);
  if (parts) into.append(parts);
}

// -- chat log ---------------------------------------------------------------------------

const log = $("log");

function scrollDown() { log.scrollTop = log.scrollHeight; }

function addMessage(kind, text, meta) {
  $("empty-hint")?.remove();
  const node = el("div", { class: `msg ${kind}` }, el("span", { class: "text", text }));
  if (meta) node.append(el("span", { class: "meta", text: meta }));
  log.append(node);
  scrollDown();
  return node;
}

function toolCard(call) {
  $("empty-hint")?.remove();
  const card = el("div", { class: "card toolcall", "data-call-id": call.call_id || "", "data-state": "running" },
    el("div", { class: "head" },
      el("span", { class: "name", text: call.name }),
      el("span", { class: "state", text: "running…" }),
      el("span", { class: "latency" })),
    el("div", { class: "label", text: "arguments" }),
    el("pre", { class: "args", text: prettyRaw(call.raw_arguments) }),
    el("div", { class: "body" }));
  log.append(card);
  scrollDown();
  return card;
}

function finishCard(card, record) {
  const result = record.result || {};
  const body = card.querySelector(".body");
  body.replaceChildren(el("div", { class: "label", text: record.task_id ? "acknowledgement" : "result" }));
  renderResult(result, body);
  if (record.task_id) {
    card.dataset.state = "async";
    card.dataset.taskId = record.task_id;
    card.querySelector(".state").textContent = `running in the background (task ${record.task_id})`;
  } else {
    card.dataset.state = result.is_error ? "error" : "done";
    card.querySelector(".state").textContent = result.is_error ? "failed" : "done";
  }
  if (record.latency_ms !== undefined) {
    card.querySelector(".latency").textContent = `${Number(record.latency_ms).toFixed(1)} ms`;
  }
  scrollDown();
}

async function sendChat(text) {
  if (state.busy) return;
  state.busy = true;
  $("send").disabled = true;
  addMessage("user", text);
  let bubble = null;
  const cards = new Map();
  const body = { session: state.session, role: state.role, provider: state.provider, text };
  try {
    const response = await api("/console/api/chat", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      addMessage("error", await errorText(response));
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (!line.trim()) continue;
        const event = JSON.parse(line);
        if (event.text_delta) {
          if (!bubble) { bubble = addMessage("assistant streaming", ""); }
          bubble.querySelector(".text").textContent += event.text_delta.text || "";
          bubble.dataset.deltas = String(Number(bubble.dataset.deltas || 0) + 1);
          scrollDown();
        } else if (event.tool_call_started) {
          if (bubble) { bubble.classList.remove("streaming"); bubble = null; }
          const call = event.tool_call_started.call || {};
          cards.set(call.call_id, toolCard(call));
        } else if (event.tool_call_finished) {
          const record = event.tool_call_finished.record || {};
          const call = record.call || {};
          const card = cards.get(call.call_id) || toolCard(call);
          finishCard(card, record);
        } else if (event.final) {
          const final = event.final;
          if (!bubble && final.message && final.message.content) bubble = addMessage("assistant", final.message.content);
          if (bubble) {
            bubble.classList.remove("streaming");
            const usage = final.usage || {};
            const note = [final.provider, final.model].filter(Boolean).join(" · ");
            const tokens = usage.prompt_tokens || usage.completion_tokens ? ` · ${usage.prompt_tokens || 0}+${usage.completion_tokens || 0} tokens` : "";
            bubble.append(el("span", { class: "meta", text: `${note}${tokens}${final.round_limit_reached ? " · round limit reached" : ""}` }));
          }
        } else if (event.error) {
          addMessage("error", `${event.error.code}: ${event.error.message}`);
        }
      }
    }
  } catch (err) {
    addMessage("error", `the chat failed: ${err.message || err}`);
  } finally {
    if (bubble) bubble.classList.remove("streaming");
    state.busy = false;
    $("send").disabled = false;
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text) return;
  $("prompt").value = "";
  sendChat(text);
});

$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

// -- history --------------------------------------------------------------------------------

async function loadHistory() {
  log.replaceChildren();
  const response = await api(`/console/api/history?session=${encodeURIComponent(state.session)}`);
  if (!response.ok) {
    if (response.status !== 401) addMessage("error", `history: ${await errorText(response)}`);
    return;
  }
  const history = await response.json();
  const messages = history.messages || [];
  if (!messages.length) {
    log.append(el("p", { id: "empty-hint", class: "hint", text: "A new session. Ask something; tool calls show up here as they start and finish, async results in the panel on the right." }));
    return;
  }
  if (history.truncated) log.append(el("p", { class: "hint", text: "Older messages are not shown." }));
  const cards = new Map();
  for (const m of messages) {
    const when = shortTime(m.created_at);
    if (m.role === "MESSAGE_ROLE_USER") addMessage("user", m.content || "", when);
    else if (m.role === "MESSAGE_ROLE_ASSISTANT") {
      if (m.content) addMessage("assistant", m.content, when);
      for (const call of m.tool_calls || []) cards.set(call.call_id, toolCard(call));
    } else if (m.role === "MESSAGE_ROLE_TOOL") {
      const card = cards.get(m.tool_call_id) || toolCard({ call_id: m.tool_call_id, name: m.name, raw_arguments: "" });
      let parsed;
      try { parsed = JSON.parse(m.content); } catch { parsed = m.content; }
      const result = parsed && typeof parsed === "object" && "error" in parsed && Object.keys(parsed).length <= 2
        ? { is_error: true, error: String(parsed.error), output: parsed.output, parts: m.parts }
        : { output: parsed, parts: m.parts };
      finishCard(card, { result, task_id: parsed && parsed.task_id });
    } else {
      addMessage("system", m.content || "", when);
    }
  }
}

// -- async results (pushed) -------------------------------------------------------------------

// A running long job: a bar (indeterminate until the job reports a fraction) and its
// message, updated by each report; its result takes its place when it finishes.
function showProgress(task) {
  if (state.shownTasks.has(task.task_id)) return;  // finished already: the result is shown
  const box = $("tasks");
  box.querySelector(".hint")?.remove();
  let node = box.querySelector(`.task.running[data-task-id="${CSS.escape(task.task_id)}"]`);
  if (!node) {
    node = el("div", { class: "task running", "data-task-id": task.task_id, "data-status": "TASK_STATUS_RUNNING" },
      el("div", { class: "head" },
        el("strong", { class: "name", text: task.tool_name }),
        el("span", { class: "meta", text: `running · ${task.task_id}` })),
      el("progress", { class: "job-progress", max: 1 }),
      el("div", { class: "progress-text" }));
    box.prepend(node);
    $("task-count").textContent = `(${box.querySelectorAll(".task").length})`;
  }
  const progress = task.progress || {};
  const bar = node.querySelector("progress");
  const known = typeof progress.fraction === "number" && Number.isFinite(progress.fraction);
  if (known) bar.value = Math.min(1, Math.max(0, progress.fraction));
  else bar.removeAttribute("value");  // indeterminate
  const percent = known ? `${Math.round(bar.value * 100)} %` : "";
  const text = [percent, progress.message || ""].filter(Boolean).join(" · ") || "accepted; no progress reported yet";
  node.querySelector(".progress-text").textContent = text;
  const card = log.querySelector(`.card[data-task-id="${CSS.escape(task.task_id)}"] .state`);
  if (card) card.textContent = `running in the background (task ${task.task_id}): ${text}`;
}

function showTask(task) {
  if (state.shownTasks.has(task.task_id)) { acknowledge(task.task_id); return; }
  state.shownTasks.add(task.task_id);
  const box = $("tasks");
  box.querySelector(".hint")?.remove();
  const running = box.querySelector(`.task.running[data-task-id="${CSS.escape(task.task_id)}"]`);
  const node = el("div", { class: "task fresh", "data-task-id": task.task_id, "data-status": task.status },
    el("div", { class: "head" },
      el("strong", { class: "name", text: task.tool_name }),
      el("span", { class: "meta", text: `${task.status === "TASK_STATUS_FAILED" ? "failed" : "finished"} ${shortTime(task.finished_at)} · ${task.task_id}` })),
    el("div", { class: "label", text: "arguments" }),
    el("pre", { class: "args", text: pretty(task.arguments || {}) }));
  const result = el("div", { class: "body" });
  renderResult(task.result, result);
  node.append(result);
  if (running) running.replaceWith(node);  // the result takes the bar's place
  else box.prepend(node);
  $("task-count").textContent = `(${box.querySelectorAll(".task").length})`;
  // The card for the call in the chat log, when it is there, says it is done.
  const card = log.querySelector(`.card[data-task-id="${CSS.escape(task.task_id)}"] .state`);
  if (card) card.textContent = `finished (task ${task.task_id}): see Async results`;
  // Acknowledged once it is on screen: after the browser painted it, in a visible tab.
  requestAnimationFrame(() => setTimeout(() => acknowledge(task.task_id), 0));
}

function acknowledge(taskId) {
  if (document.visibilityState !== "visible") { state.pendingAcks.add(taskId); return; }
  send({ type: "ack", task_ids: [taskId] });
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && state.pendingAcks.size) {
    send({ type: "ack", task_ids: [...state.pendingAcks] });
    state.pendingAcks.clear();
  }
});

// -- tools -------------------------------------------------------------------------------------

function renderTools(message) {
  const roleSelect = $("role");
  const roles = message.roles || [];
  if (roles.length && roleSelect.options.length !== roles.length) {
    roleSelect.replaceChildren(...roles.map((r) => el("option", { value: r, text: r })));
  }
  if (!state.role) state.role = message.role;
  roleSelect.value = state.role;
  const previous = state.tools;
  state.tools = new Map((message.tools || []).map((t) => [t.name, t]));
  const list = $("tools");
  const filter = $("tool-filter").value.trim().toLowerCase();
  const items = [];
  for (const tool of state.tools.values()) {
    if (filter && !tool.name.toLowerCase().includes(filter) && !(tool.description || "").toLowerCase().includes(filter)) continue;
    const item = el("li", { "data-tool": tool.name, class: tool.name === state.selected ? "selected" : "" },
      el("span", { class: "tname", text: tool.name }),
      el("span", { class: `badge ${tool.mode}`, text: tool.mode }),
      el("span", { class: "badge", text: tool.source || "no source" }),
      el("span", { class: "tdesc", text: tool.title ? `${tool.title}: ${tool.description}` : tool.description }));
    item.addEventListener("click", () => selectTool(tool.name));
    items.push(item);
  }
  list.replaceChildren(...items);
  const more = message.total > state.tools.size ? ` of ${message.total}` : "";
  $("tool-count").textContent = `(${state.tools.size}${more})`;
  if (!message.synced) $("tool-count").textContent += " syncing…";
  if (state.selected && !state.tools.has(state.selected) && previous.has(state.selected)) {
    const detail = $("tool-detail");
    detail.querySelector("h3")?.append(el("span", { class: "badge", text: "gone: its plugin stopped" }));
    detail.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  }
}

$("tool-filter").addEventListener("input", () => renderTools({ roles: [], role: state.role, tools: [...state.tools.values()], total: state.tools.size, synced: true }));

async function selectTool(name) {
  state.selected = name;
  document.querySelectorAll("#tools li").forEach((li) => li.classList.toggle("selected", li.dataset.tool === name));
  const tool = state.tools.get(name);
  if (!tool) return;
  const detail = $("tool-detail");
  detail.hidden = false;
  const stats = el("dl", { class: "stats" });
  const form = buildForm(tool);
  detail.replaceChildren(...[
    el("h3", { text: tool.name }),
    tool.title ? el("div", { class: "hint", text: tool.title }) : null,
    el("div", { class: "desc", text: tool.description || "(no description)" }),
    stats,
    el("details", {}, el("summary", { text: "input schema" }), el("pre", { class: "schema", text: pretty(tool.parameters) })),
    tool.output_schema ? el("details", {}, el("summary", { text: "output schema" }), el("pre", { text: pretty(tool.output_schema) })) : null,
    form,
    el("div", { id: "invoke-result" }),
  ].filter(Boolean));
  await refreshStats(tool, stats);
}

async function refreshStats(tool, into) {
  const rows = [
    ["mode", tool.mode + (tool.mode === "async" && tool.ack_message ? ` ("${tool.ack_message}")` : "")],
    ["source", tool.source || "—"],
    ["timeout", `${tool.timeout_seconds || 30} s`],
  ];
  if (tool.annotations && Object.keys(tool.annotations).length) rows.push(["hints", Object.entries(tool.annotations).map(([k, v]) => `${k}=${v}`).join(", ")]);
  for (const [k, v] of Object.entries(tool.metadata || {})) rows.push([k, v]);
  try {
    const response = await api(`/console/api/tool?role=${encodeURIComponent(state.role)}&name=${encodeURIComponent(tool.name)}`);
    if (response.ok) {
      const entry = await response.json();
      const s = entry.stats || {};
      rows.push(["calls", `${s.calls || 0} (errors ${s.errors || 0})`]);
      if (s.calls) rows.push(["latency", `mean ${Number(s.mean_latency_ms || 0).toFixed(1)} ms, max ${Number(s.max_latency_ms || 0).toFixed(1)} ms`]);
      if (s.last_error) rows.push(["last error", s.last_error]);
      if (entry.registered_at) rows.push(["registered", new Date(entry.registered_at).toLocaleString()]);
      rows.push(["lease", entry.lease_id || "none"]);
    }
  } catch { /* the stats are extras: the form works without them */ }
  into.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
}

// The form: one field per property of the schema (as MCP Inspector does), or the raw JSON.
// Values are sent as typed when they parse and as text otherwise, so the registry's own
// validation answers with the exact error.
function buildForm(tool) {
  const schema = tool.parameters || {};
  const properties = schema.properties || {};
  const required = new Set(schema.required || []);
  const form = el("form", { id: "invoke-form", class: "invoke" });
  const fields = el("div", { class: "fields" });
  const raw = el("textarea", { id: "invoke-raw", rows: 6, hidden: true, spellcheck: false });
  for (const [name, prop] of Object.entries(properties)) {
    fields.append(fieldFor(name, prop || {}, required.has(name)));
  }
  if (!Object.keys(properties).length) fields.append(el("p", { class: "hint", text: "This tool takes no arguments." }));
  const toggle = el("input", { type: "checkbox", id: "invoke-as-json" });
  toggle.addEventListener("change", () => {
    if (toggle.checked) raw.value = pretty(collect(fields));
    fields.hidden = toggle.checked;
    raw.hidden = !toggle.checked;
  });
  form.append(fields, raw,
    el("div", { class: "form-actions" },
      el("button", { type: "submit", id: "invoke-button", text: "Invoke" }),
      el("label", { class: "mode-switch" }, toggle, "edit as JSON")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const request = { name: tool.name, role: state.role, session: state.session };
    if (toggle.checked) request.raw_arguments = raw.value;
    else request.arguments = collect(fields);
    await invoke(request, tool);
  });
  return form;
}

function fieldFor(name, prop, isRequired) {
  const id = `arg-${name}`;
  const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== "null") : prop.type;
  let input;
  if (Array.isArray(prop.enum)) {
    input = el("select", { id }, el("option", { value: "", text: isRequired ? "— choose —" : "— unset —" }),
      ...prop.enum.map((v, i) => el("option", { value: String(i), text: JSON.stringify(v) })));
    input.dataset.kind = "enum";
    input._values = prop.enum;
  } else if (type === "boolean") {
    input = el("select", { id }, el("option", { value: "", text: "— unset —" }), el("option", { value: "true", text: "true" }), el("option", { value: "false", text: "false" }));
    input.dataset.kind = "boolean";
  } else if (type === "object" || type === "array" || !type) {
    input = el("textarea", { id, rows: 3, spellcheck: false, placeholder: type === "array" ? "[ ]" : type === "object" ? "{ }" : "JSON value" });
    input.dataset.kind = "json";
  } else {
    input = el("input", { id, type: "text", spellcheck: false, inputMode: type === "string" ? "text" : "decimal" });
    input.dataset.kind = type;
    if (prop.default !== undefined) input.placeholder = `default: ${JSON.stringify(prop.default)}`;
  }
  input.name = name;
  const help = [prop.description, prop.minimum !== undefined ? `min ${prop.minimum}` : "", prop.maximum !== undefined ? `max ${prop.maximum}` : ""].filter(Boolean).join(" · ");
  return el("div", { class: "field" },
    el("label", { htmlFor: id }, name, isRequired ? el("span", { class: "req", text: " *" }) : null, el("span", { class: "badge", text: type || "any" })),
    input,
    help ? el("span", { class: "help", text: help }) : null);
}

function collect(fields) {
  const args = {};
  for (const input of fields.querySelectorAll("input, select, textarea")) {
    const text = input.value;
    if (text === "") continue;  // left empty: not sent (a required one is refused by the registry)
    const kind = input.dataset.kind;
    if (kind === "enum") args[input.name] = input._values[Number(text)];
    else if (kind === "boolean") args[input.name] = text === "true";
    else if (kind === "integer" || kind === "number") {
      const n = Number(text.trim());
      args[input.name] = text.trim() !== "" && Number.isFinite(n) ? n : text;
    } else if (kind === "json") {
      try { args[input.name] = JSON.parse(text); } catch { args[input.name] = text; }
    } else args[input.name] = text;
  }
  return args;
}

async function invoke(request, tool) {
  const out = $("invoke-result");
  const button = $("invoke-button");
  button.disabled = true;
  out.replaceChildren(el("div", { class: "hint", text: "calling…" }));
  try {
    const response = await api("/console/api/invoke", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(request),
    });
    if (!response.ok) {
      out.replaceChildren(el("div", { class: "result error" }, el("div", { class: "title", text: `refused (${response.status})` }), el("pre", { text: await errorText(response) })));
      out.scrollIntoView({ block: "nearest" });
      return;
    }
    const reply = await response.json();
    const result = reply.result || {};
    const box = el("div", { class: `result ${result.is_error ? "error" : "ok"}` },
      el("div", { class: "title", text: `${result.is_error ? "error" : "result"} · ${Number(reply.latency_ms || 0).toFixed(1)} ms` }));
    renderResult(result, box);
    out.replaceChildren(box);
    box.scrollIntoView({ block: "nearest" });
    const stats = $("tool-detail").querySelector("dl.stats");
    if (stats && state.tools.has(tool.name)) refreshStats(tool, stats);
  } catch (err) {
    out.replaceChildren(el("div", { class: "result error" }, el("div", { class: "title", text: "failed" }), el("pre", { text: String(err.message || err) })));
  } finally {
    button.disabled = !state.tools.has(tool.name);
  }
}

// -- the WebSocket ------------------------------------------------------------------------------

function setStatus(kind, text) {
  const status = $("status");
  status.dataset.state = kind;
  status.textContent = text;
}

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
}

function connect() {
  if (state.ws) { state.ws.onclose = null; state.ws.close(); }
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/console/ws`);
  state.ws = ws;
  ws.onopen = () => {
    ws.send(JSON.stringify({ type: "hello", token: state.token, session: state.session, role: state.role }));
  };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "ready") {
      state.wsDelay = 500;
      setStatus("live", "live");
      const providers = $("provider");
      if (providers.options.length === 1) {
        for (const p of message.providers || []) providers.append(el("option", { value: p, text: p }));
      }
      providers.value = state.provider;
      if (!state.role) state.role = message.default_role;
    } else if (message.type === "tools") {
      renderTools(message);
    } else if (message.type === "task") {
      showTask(message.task);
    } else if (message.type === "progress") {
      showProgress(message.task);
    } else if (message.type === "acked") {
      for (const id of message.task_ids || []) {
        const node = $("tasks").querySelector(`.task[data-task-id="${CSS.escape(id)}"]`);
        if (node) { node.dataset.acked = "true"; node.querySelector(".meta")?.append(" · ✓ seen"); }
      }
    } else if (message.type === "status") {
      if (message.llm === "OK") setStatus("live", "live");
      else setStatus("down", `LLMService: ${message.llm}`);
    } else if (message.type === "error") {
      console.warn("console:", message.message);
    }
  };
  ws.onclose = (event) => {
    if (event.code === 4401) { setStatus("down", "token needed"); askToken(); return; }
    setStatus("down", "reconnecting…");
    setTimeout(connect, state.wsDelay);
    state.wsDelay = Math.min(state.wsDelay * 2, 5000);
  };
}

// -- pickers ------------------------------------------------------------------------------------

function choose(changes) {
  Object.assign(state, changes);
  localStorage.setItem("toolcall.session", state.session);
  localStorage.setItem("toolcall.role", state.role);
  localStorage.setItem("toolcall.provider", state.provider);
}

$("session").addEventListener("change", () => {
  const session = $("session").value.trim();
  if (!session || session === state.session) return;
  switchSession(session);
});

$("new-session").addEventListener("click", () => switchSession(newSessionId()));

function switchSession(session) {
  choose({ session });
  $("session").value = session;
  state.shownTasks.clear();
  $("tasks").replaceChildren(el("p", { class: "hint", text: "Results of background tools appear here, live." }));
  $("task-count").textContent = "";
  send({ type: "select", session, role: state.role });
  loadHistory();
}

$("role").addEventListener("change", () => {
  choose({ role: $("role").value });
  send({ type: "select", session: state.session, role: state.role });
});

$("provider").addEventListener("change", () => choose({ provider: $("provider").value }));

// -- start ----------------------------------------------------------------------------------------

async function start() {
  choose({});
  $("session").value = state.session;
  const info = await fetch("/console/api/info").then((r) => r.json()).catch(() => ({}));
  if (info.token_required && !state.token) { askToken(); return; }
  connect();
  loadHistory();
}

start();
