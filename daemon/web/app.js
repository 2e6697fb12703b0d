// pixdex's web page: search, a virtualised grid of thumbnails, a detail view that edits the sidecar,
// live indexing progress from the event stream; the views beside the results (timeline.js, duplicates.js) and
// the selection of many images (curate.js) are in their own files. Every value from the daemon is set as text, never as
// markup (the page's Content-Security-Policy allows no inline script either).
"use strict";

const CELL = 190;        // px: a thumbnail cell, square, gap included
const OVERSCAN = 3;      // rows drawn above and below the visible ones
const PAGE_K = 500;      // results asked for per search

const $ = (id) => document.getElementById(id);
const state = { hits: [], columns: 1, query: "", similar: [], current: null, paused: false, view: "results",
                selecting: false, selected: new Set() };

// Item ids are 63-bit integers: more than a JavaScript number holds exactly (2^53). Whole numbers of 16
// digits or more, outside strings, become strings before JSON.parse sees them.
function parseJSON(text) {
  let out = "";
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      out += c;
      if (c === "\\") { out += text[++i] ?? ""; } else if (c === '"') { inString = false; }
    } else if (c === '"') {
      inString = true;
      out += c;
    } else if (c >= "0" && c <= "9" && !/[0-9.eE+-]/.test(text[i - 1] ?? "")) {
      let j = i;
      while (j < text.length && /[0-9]/.test(text[j])) j++;
      const digits = text.slice(i, j);
      const fraction = /[.eE]/.test(text[j] ?? "");
      out += digits.length >= 16 && !fraction ? `"${digits}"` : digits;
      i = j - 1;
    } else {
      out += c;
    }
  }
  return JSON.parse(out);
}

async function api(method, path, body) {
  const options = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const type = response.headers.get("Content-Type") || "";
  const data = type.startsWith("application/json") ? parseJSON(await response.text()) : await response.text();
  if (!response.ok) {
    const message = (data && data.error) || `HTTP ${response.status}`;
    throw new Error(message);
  }
  return data;
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function basename(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}

// Searching ---------------------------------------------------------------------------------------
async function search(query, push = true) {
  state.query = query;
  state.similar = [];
  if (push) history.replaceState(null, "", query ? `/?q=${encodeURIComponent(query)}` : "/");
  if (!query.trim()) return show({ hits: [], notes: [] }, "Type a query: words, \"phrases\", tag:, folder:, after:, camera:…");
  $("summary").textContent = "searching…";
  try {
    const results = await api("GET", `/search?k=${PAGE_K}&q=${encodeURIComponent(query)}`);
    show(results, null);
  } catch (error) {
    show({ hits: [], notes: [] }, error.message);
  }
}

async function similar(ids, push = true) {
  state.similar = ids;
  state.query = "";
  $("q").value = "";
  if (push) history.replaceState(null, "", `/?similar=${ids.join(",")}`);
  $("summary").textContent = "finding similar images…";
  try {
    const params = ids.map((id) => `id=${encodeURIComponent(id)}`).join("&");
    show(await api("GET", `/similar?k=${PAGE_K}&${params}`), null);
  } catch (error) {
    show({ hits: [], notes: [] }, error.message);
  }
}

function show(results, message) {
  state.hits = results.hits;
  $("summary").textContent = message ?? (results.hits.length
    ? `${results.hits.length} image${results.hits.length === 1 ? "" : "s"}` : "nothing matched");
  const notes = $("notes");
  notes.replaceChildren(...(results.notes || []).map((n) => el("li", {}, n)));
  $("scroller").scrollTop = 0;
  $("grid").replaceChildren();  // cells are kept by position while scrolling: not across result sets
  layout();
}

// The grid: only the rows in view (plus a few) are in the document -------------------------------
function layout() {
  const scroller = $("scroller");
  state.columns = Math.max(1, Math.floor(scroller.clientWidth / CELL));
  const rows = Math.ceil(state.hits.length / state.columns);
  $("grid").style.height = `${rows * CELL}px`;
  draw();
}

function draw() {
  const scroller = $("scroller");
  const first = Math.max(0, Math.floor(scroller.scrollTop / CELL) - OVERSCAN);
  const last = Math.ceil((scroller.scrollTop + scroller.clientHeight) / CELL) + OVERSCAN;
  const start = first * state.columns;
  const end = Math.min(state.hits.length, last * state.columns);
  const grid = $("grid");
  const keep = new Map();
  for (const cell of grid.children) keep.set(cell.dataset.index, cell);
  const wanted = new Set();
  for (let index = start; index < end; index++) {
    wanted.add(String(index));
    if (!keep.has(String(index))) grid.append(cell(index));
  }
  for (const [index, node] of keep) if (!wanted.has(index)) node.remove();
}

function cell(index) {
  const hit = state.hits[index];
  const node = el("button", { class: "cell", role: "listitem", type: "button", "data-index": String(index),
                              "data-id": String(hit.id), title: hit.path });
  node.style.top = `${Math.floor(index / state.columns) * CELL}px`;
  node.style.left = `${(index % state.columns) * CELL}px`;
  const image = el("img", { src: `/thumbnail/${hit.id}?size=256&v=${hit.mtime_ns}`, alt: basename(hit.path), loading: "lazy",
                            decoding: "async" });
  node.append(image, el("span", { class: "name" }, basename(hit.path)));
  if (state.selected.has(String(hit.id))) node.classList.add("selected");
  node.addEventListener("click", () => (state.selecting ? toggleSelected(hit.id, node) : openDetail(hit.id)));
  return node;
}

// Detail view ---------------------------------------------------------------------------------------
async function openDetail(id) {
  const dialog = $("detail");
  $("edit-status").textContent = "";
  try {
    state.current = await api("GET", `/items/${id}`);
  } catch (error) {
    $("summary").textContent = error.message;
    return;
  }
  fillDetail(state.current);
  if (!dialog.open) dialog.showModal();
  const strip = $("detail-similar");
  strip.replaceChildren(el("span", {}, "…"));
  try {
    const found = await api("GET", `/similar?id=${id}&k=12`);
    strip.replaceChildren(...found.hits.map((hit) => {
      const link = el("button", { type: "button", class: "mini", title: hit.path, "data-id": String(hit.id) });
      link.append(el("img", { src: `/thumbnail/${hit.id}?size=128&v=${hit.mtime_ns}`, alt: basename(hit.path), loading: "lazy" }));
      link.addEventListener("click", () => openDetail(hit.id));
      return link;
    }));
  } catch (error) {
    strip.replaceChildren(el("span", {}, error.message));
  }
}

function fillDetail(item) {
  $("detail-name").textContent = basename(item.path);
  $("detail-path").textContent = item.path;
  $("detail-image").src = `/thumbnail/${item.id}?size=1024&v=${item.mtime_ns}`;
  $("detail-image").alt = basename(item.path);
  $("detail-original").href = `/file/${item.id}`;
  const tags = $("detail-tags");
  tags.replaceChildren(...item.tags.map((tag) => {
    const li = el("li", { class: `tag source-${tag.source || "person"}` });
    // CLIP-vocabulary tags are chosen by how far above the vocabulary's average the image is (σ); the
    // taggers' confidence is a probability; keywords a person gave carry neither.
    const confidence = typeof tag.sigma === "number" ? ` ${tag.sigma.toFixed(1)}σ`
      : typeof tag.confidence === "number" && tag.source === "wd14"
        ? ` ${Math.round(tag.confidence * 100)}%` : "";
    li.append(el("span", { class: "tag-name" }, tag.name),
              el("span", { class: "tag-source" }, `${tag.source || "person"}${confidence}`));
    const remove = el("button", { type: "button", class: "remove", "aria-label": `Remove ${tag.name}` }, "×");
    remove.addEventListener("click", () => edit({ remove_tags: [tag.name] }));
    li.append(remove);
    return li;
  }));
  drawStars($("detail-rating"), item.rating, (rating) => edit({ rating }));
  drawLabels($("detail-label"), item.label, (label) => edit({ label }));
  const llm = item.llm || {};
  $("description").value = item.description || llm.description || "";
  const read = [(item.text || {}).ocr, llm.text].filter(Boolean).join("\n");
  $("detail-text").textContent = read;
  $("detail-text-block").hidden = !read;
  const where = item.place || {};
  const place = [where.city, where.state, where.country].filter(Boolean).join(", ");
  const facts = { place: place || null, taken: item.taken, camera: item.camera,
                  size: item.width ? `${item.width} × ${item.height}` : null,
                  bytes: item.size, ...item.facts, state: item.state, model: item.clip_model };
  $("detail-facts").replaceChildren(...Object.entries(facts).filter(([, v]) => v !== null && v !== undefined && v !== "")
    .flatMap(([key, value]) => [el("dt", {}, key), el("dd", {}, String(value))]));
}

async function edit(change) {
  const item = state.current;
  if (!item) return;
  $("edit-status").textContent = "saving…";
  try {
    state.current = await api("PATCH", `/items/${item.id}`, change);
    fillDetail(state.current);
    $("edit-status").textContent = "saved to the sidecar";
  } catch (error) {
    $("edit-status").textContent = error.message;
  }
}

// Views: the results grid, the timeline, the duplicates ------------------------------------------------
const VIEWS = { results: "grid", timeline: "timeline-view", duplicates: "duplicates-view" };

function setView(view, push = true) {
  state.view = VIEWS[view] ? view : "results";
  for (const [name, id] of Object.entries(VIEWS)) $(id).hidden = name !== state.view;
  for (const button of $("views").querySelectorAll("[data-view]")) {
    button.setAttribute("aria-pressed", String(button.dataset.view === state.view));
  }
  if (push) history.replaceState(null, "", state.view === "results" ? (state.query ? `/?q=${encodeURIComponent(state.query)}` : "/")
    : `/?view=${state.view}`);
  $("scroller").scrollTop = 0;
  if (state.view === "timeline") showTimeline();
  else if (state.view === "duplicates") showDuplicates();
  else layout();
}

// Live progress ---------------------------------------------------------------------------------------
function listen() {
  const source = new EventSource("/events");
  const text = $("progress-text");
  source.addEventListener("open", () => { text.textContent = "connected"; });
  source.addEventListener("error", () => { text.textContent = "reconnecting…"; });
  source.addEventListener("progress", (event) => {
    const data = JSON.parse(event.data);
    const eta = data.eta_seconds != null ? `, about ${data.eta_seconds} s left` : "";
    text.textContent = `indexing ${data.rate}/s${eta}; ${data.committed} committed`;
  });
  source.addEventListener("indexed", (event) => {
    const data = JSON.parse(event.data);
    text.textContent = `indexed ${basename(String(data.path || ""))}`;
  });
  source.addEventListener("paused", () => setPaused(true));
  source.addEventListener("resumed", () => setPaused(false));
  source.addEventListener("models", (event) => {
    const data = JSON.parse(event.data);
    if (data.progress && data.progress.total) {
      text.textContent = `downloading ${data.progress.model}: ${Math.floor(100 * data.progress.done / data.progress.total)}%`;
    }
  });
}

function setPaused(paused, announce = true) {
  state.paused = paused;
  const button = $("pause");
  button.hidden = false;
  button.textContent = paused ? "Resume indexing" : "Pause indexing";
  if (announce || paused) $("progress-text").textContent = paused ? "indexing paused" : "indexing resumed";
}

async function togglePause() {
  const pause = !state.paused;  // the event stream may say so first: set what was asked, not a toggle
  try {
    await api("POST", pause ? "/pause" : "/resume", {});
    setPaused(pause);
  } catch (error) {
    $("progress-text").textContent = error.message;
  }
}

async function phone() {
  const dialog = $("phone-dialog");
  try {
    const next = location.pathname + location.search;
    const ticket = await api("POST", "/login/ticket", { lan: true, next });
    $("phone-text").textContent = `Scan within ${Math.round(ticket.expires_in / 60)} minutes: the link works once. ${ticket.url}`;
    $("phone-qr").src = `/qr.svg?text=${encodeURIComponent(ticket.url)}`;
    $("phone-qr").hidden = false;
  } catch (error) {
    $("phone-text").textContent = error.message;
    $("phone-qr").hidden = true;
  }
  dialog.showModal();
}

// Start -------------------------------------------------------------------------------------------------
function start() {
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.view !== "results") setView("results");
    search($("q").value);
  });
  for (const button of $("views").querySelectorAll("[data-view]")) {
    button.addEventListener("click", () => setView(button.dataset.view));
  }
  startCuration();
  $("add-tag").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("new-tag").value.trim();
    if (name) edit({ add_tags: [name] }).then(() => { $("new-tag").value = ""; });
  });
  $("edit-description").addEventListener("submit", (event) => {
    event.preventDefault();
    edit({ description: $("description").value });
  });
  $("pause").addEventListener("click", togglePause);
  $("phone").addEventListener("click", phone);
  $("scroller").addEventListener("scroll", () => requestAnimationFrame(draw), { passive: true });
  new ResizeObserver(() => layout()).observe($("scroller"));
  const params = new URLSearchParams(location.search);
  if (params.get("view")) {
    setView(params.get("view"), false);
  } else if (params.get("similar")) {
    similar(params.get("similar").split(",").filter((id) => /^[0-9]+$/.test(id)), false);
  } else {
    $("q").value = params.get("q") || "";
    search($("q").value, false);
  }
  api("GET", "/health").then((health) => setPaused(health.paused, false)).catch(() => {});
  listen();
}

document.addEventListener("DOMContentLoaded", start);
