// pixseek web app: search by image, the library (upload, browse, delete),
// server-side builds and evaluations, over the JSON API in docs/openapi.json. Plain DOM code,
// no framework and no build step; the server embeds this file as it is.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "pixseek.apiKey";
const RESULTS_PAGE = 24;    // result cards added per "Show more" / scroll step
const LIBRARY_PAGE = 48;    // images per GET /api/v1/images page
const UPLOAD_PARALLEL = 3;  // files in flight at once
const BUILD_POLL_MS = 1000;
const EVAL_POLL_MS = 500;

// ---------------------------------------------------------------- helpers

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

function formatBytes(n) {
  if (!(n >= 0)) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
}

function formatDuration(s) {
  if (!(s >= 0) || !isFinite(s)) return "—";
  if (s < 60) return Math.ceil(s) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}

// added_at is Unix seconds; shown in the browser's locale.
function formatTime(seconds) {
  if (typeof seconds !== "number" || !(seconds > 0)) return null;
  return new Date(seconds * 1000).toLocaleString();
}

function setStatus(node, text, kind) {
  node.textContent = text || "";
  node.classList.toggle("error", kind === "error");
  node.classList.toggle("busy", kind === "busy");
}

// ------------------------------------------------------------ API access

class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function savedKey() {
  try { return localStorage.getItem(KEY_STORAGE) || ""; } catch (e) { return ""; }
}

function authHeaders() {
  const key = savedKey();
  return key ? { Authorization: "Bearer " + key } : {};
}

// The API's own message ({"error":{"code","message"}}) when there is one.
function errorText(status, body, fallback) {
  if (body && body.error && body.error.message) return body.error.message;
  return fallback || "HTTP " + status;
}

// 401 always means "send a key"; 403 is also "permission denied" for, say, a
// build outside the import root, so only a 403 about the key asks for one.
function wantsKey(status, message) {
  return status === 401 || (status === 403 && /\bkey\b|bearer|authori[sz]/i.test(message || ""));
}

let keyPrompt = null;  // one prompt at a time, shared by concurrent requests

// Asks for the API key (after a 401/403); resolves true when one was entered.
function askForKey(status, message) {
  if (keyPrompt) return keyPrompt;
  const dialog = $("key-dialog");
  $("key-title").textContent = status === 403 ? "API key rejected" : "API key needed";
  $("key-text").textContent = status === 403
    ? "The server did not accept the saved key (" + message + "). Enter another one."
    : "This server needs an API key for this action (" + message + ").";
  $("key-input").value = "";
  dialog.returnValue = "";
  keyPrompt = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const key = $("key-input").value.trim();
      const ok = dialog.returnValue === "ok" && key !== "";
      if (ok) {
        try { localStorage.setItem(KEY_STORAGE, key); } catch (e) { /* private mode: key lives for this try only */ }
        updateKeyButton();
      }
      keyPrompt = null;
      resolve(ok);
    }, { once: true });
  });
  dialog.showModal();
  $("key-input").focus();
  return keyPrompt;
}

function networkError(e) {
  return new ApiError(navigator.onLine ? "Cannot reach the server (" + e.message + ")."
                                       : "You are offline.", 0);
}

// fetch() for the JSON API: resolves to the parsed body (null for 204),
// rejects with an ApiError carrying the server's message. A 401/403 asks for
// the API key and retries with it.
async function api(path, opts = {}) {
  for (;;) {
    const headers = authHeaders();
    let body = opts.body;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    let res;
    try {
      res = await fetch(path, { method: opts.method || "GET", headers, body, signal: opts.signal });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw networkError(e);
    }
    let parsed = null;
    if (res.status !== 204) {
      try { parsed = await res.json(); } catch (e) { parsed = null; }
    }
    if (res.ok) return parsed;
    const message = errorText(res.status, parsed);
    if (wantsKey(res.status, message) && await askForKey(res.status, message)) continue;
    throw new ApiError(message, res.status, parsed);
  }
}

// One file to POST /api/v1/images with upload progress (fetch has none), and
// the same key handling as api(). Resolves to the stored id.
async function uploadFile(file, onProgress) {
  for (;;) {
    const { status, body } = await new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/v1/images");
      for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) onProgress(e.loaded / e.total);
      });
      xhr.addEventListener("load", () => resolve({ status: xhr.status, body: xhr.response }));
      xhr.addEventListener("error", () => reject(networkError(new Error("upload failed"))));
      const form = new FormData();
      form.append("image", file, file.name || "image");
      xhr.send(form);
    });
    if (status === 201 && body && body.ids && body.ids.length) return body.ids[0];
    const message = errorText(status, body);
    if (wantsKey(status, message) && await askForKey(status, message)) continue;
    throw new ApiError(message, status, body);
  }
}

// Shows the first of `urls` that loads. An <img> request cannot carry the
// API key, so a server with keyed reads (serve --keyed-reads) refuses it;
// each URL is then fetched again with the key and shown from a blob.
function setImage(img, urls) {
  let i = 0;
  let keyed = false;
  img.onload = () => { if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src); };
  img.onerror = async () => {
    if (!keyed && savedKey()) {
      keyed = true;
      try {
        const res = await fetch(urls[i], { headers: authHeaders() });
        if (res.ok) { img.src = URL.createObjectURL(await res.blob()); return; }
      } catch (e) { /* try the next URL */ }
    }
    if (++i < urls.length) { keyed = false; img.src = urls[i]; } else img.onerror = null;
  };
  img.src = urls[0];
}

function updateKeyButton() { $("forget-key").hidden = !savedKey(); }

// ---------------------------------------------------------------- dialogs

function confirmDialog(title, text) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

// Clicking the backdrop (the dialog element itself) closes a dialog.
for (const dialog of document.querySelectorAll("dialog")) {
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
}
// Cancel buttons are plain buttons, not submitters: Enter in a dialog's
// field must submit its one submit button (the action), never Cancel.
for (const b of document.querySelectorAll("[data-close]")) {
  b.addEventListener("click", () => b.closest("dialog").close("cancel"));
}

let detailRecord = null;
let detailOpener = null;  // the element to refocus when the detail closes

function metaRows(r) {
  const m = r.metadata || {};
  const rows = [
    ["Score", typeof r.score === "number" ? r.score.toFixed(4) : null],
    ["Id", r.id],
    ["Label", m.label || null],
    ["Size", m.width && m.height ? m.width + " × " + m.height + " px" : null],
    ["Format", m.format ? m.format.toUpperCase() : null],
    ["File size", m.size_bytes ? formatBytes(m.size_bytes) : null],
    ["Taken", m.exif_datetime || null],
    ["Added", formatTime(m.added_at)],
    ["Path", r.path || null],
    ["SHA-256", m.sha256 || null],
  ];
  const out = [];
  for (const [k, v] of rows) {
    if (v === null || v === undefined || v === "") continue;
    out.push(el("dt", { text: k }), el("dd", { text: String(v) }));
  }
  return out;
}

function openDetail(record, opener) {
  detailRecord = record;
  detailOpener = opener || document.activeElement;
  const file = "/api/v1/images/" + record.id + "/file";
  $("detail-title").textContent = record.name || "Image " + record.id;
  const img = $("detail-img");
  img.alt = record.name || "";
  // Formats the browser cannot show (TIFF) fall back to the thumbnail.
  setImage(img, [file, "/api/v1/images/" + record.id + "/thumbnail"]);
  $("detail-link").href = file;
  $("detail-open").href = file;
  $("detail-meta").replaceChildren(...metaRows(record));
  $("detail").showModal();
  $("detail").querySelector("[data-close]").focus();
}

$("detail").addEventListener("close", () => {
  $("detail-img").onerror = null;
  $("detail-img").removeAttribute("src");
  if (detailOpener && detailOpener.isConnected) detailOpener.focus();
});
$("detail-similar").addEventListener("click", () => {
  const r = detailRecord;
  $("detail").close();
  location.hash = "#search";
  searchById(r);
});
$("detail-delete").addEventListener("click", async () => {
  const r = detailRecord;
  if (await deleteImage(r)) $("detail").close();
});

// Asks, deletes, and removes the image's cards. True when it was deleted.
async function deleteImage(record) {
  const name = record.name || "image " + record.id;
  const ok = await confirmDialog("Delete " + name + "?",
    "It is removed from the index and the library. This cannot be undone.");
  if (!ok) return false;
  try {
    await api("/api/v1/images/" + record.id, { method: "DELETE" });
  } catch (e) {
    setStatus($("library-status"), "Could not delete " + name + ": " + e.message, "error");
    setStatus($("search-status"), "Could not delete " + name + ": " + e.message, "error");
    return false;
  }
  for (const card of document.querySelectorAll('.card[data-id="' + record.id + '"]')) card.remove();
  search.results = search.results.filter((r) => r.id !== record.id);
  setStatus($("library-status"), "Deleted " + name + ".");
  loadStats();
  return true;
}

// ------------------------------------------------------------------ cards

// One image card. `actions` are [label, handler] pairs shown under it.
function card(record, actions) {
  const name = record.name || "image " + record.id;
  const thumb = el("button", {
    type: "button", class: "thumb", "aria-label": "Details of " + name,
    onclick: (e) => openDetail(record, e.currentTarget),
  }, el("img", { alt: "", loading: "lazy", decoding: "async", width: 160, height: 160 }));
  setImage(thumb.firstChild, [record.thumbnail_url || "/api/v1/images/" + record.id + "/thumbnail"]);
  const m = record.metadata || {};
  const sub = [m.label, m.width && m.height ? m.width + "×" + m.height : null, m.format]
    .filter(Boolean).join(" · ");
  const info = el("div", { class: "info" },
    el("span", { class: "name", title: name, text: name }),
    sub ? el("span", { class: "sub", text: sub }) : null);
  if (typeof record.score === "number") {
    info.append(el("span", { class: "score" },
      el("meter", { min: 0, max: 1, value: Math.max(0, record.score), "aria-hidden": "true" }),
      el("span", { class: "score-value", text: record.score.toFixed(3) })));
  }
  if (actions.length) {
    info.append(el("div", { class: "actions" }, ...actions.map(([label, aria, fn]) =>
      el("button", { type: "button", text: label, "aria-label": aria + ": " + name, onclick: fn }))));
  }
  return el("li", { class: "card", "data-id": String(record.id) }, thumb, info);
}

// Calls `more` whenever `button` scrolls into view (infinite scroll); the
// button itself stays for keyboards and browsers without the observer.
function autoMore(button, more) {
  button.addEventListener("click", more);
  if (!("IntersectionObserver" in window)) return;
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && !button.hidden && !button.disabled) more();
  }, { rootMargin: "300px" }).observe(button);
}

// ----------------------------------------------------------------- search

const search = {
  query: null,     // {file, name} or {id, name, thumbnail_url}
  results: [],     // all hits of the last search
  shown: 0,        // how many of the filtered hits are rendered
  abort: null,
  previewUrl: null,
};

function searchParams() {
  const p = new URLSearchParams({ top_k: $("top-k").value });
  const min = Number($("min-score").value);
  if (min > 0) p.set("min_score", String(min));
  // "auto": the server keeps results of the query's own predicted category,
  // so the switch keeps working as the query changes.
  if ($("category-only").checked) p.set("category", "auto");
  return p.toString();
}

// The predicted category above the results; hidden when the server predicts
// none (a library without labels).
function showCategory(category) {
  const box = $("category");
  if (!category || !category.label) {
    box.hidden = !$("category-only").checked;
    $("category-label").textContent = "";
    $("category-confidence").textContent = "";
    $("category-text").hidden = true;
    return;
  }
  $("category-label").textContent = category.label;
  $("category-confidence").textContent = "(" + Math.round(Number(category.confidence) * 100) + "% confident)";
  $("category-text").hidden = false;
  box.hidden = false;
}

function showQuery(src, name) {
  if (search.previewUrl && search.previewUrl !== src) URL.revokeObjectURL(search.previewUrl);
  search.previewUrl = src.startsWith("blob:") ? src : null;
  const img = $("query-img");
  img.hidden = false;
  img.alt = "Query image";
  if (search.previewUrl) {
    img.onload = null;
    // A query the browser cannot show (not an image at all) gets no broken icon.
    img.onerror = () => { img.hidden = true; };
    img.src = src;
  } else {
    setImage(img, [src]);
  }
  $("query-label").textContent = "Query: " + name;
  $("query").hidden = false;
}

function searchFile(file) {
  if (!file) return;
  search.query = { file, name: file.name || "pasted image" };
  showQuery(URL.createObjectURL(file), search.query.name);
  runSearch();
}

function searchById(record) {
  search.query = { id: record.id, name: record.name || "image " + record.id };
  showQuery(record.thumbnail_url || "/api/v1/images/" + record.id + "/thumbnail", search.query.name);
  runSearch();
  $("query").scrollIntoView({ block: "nearest" });
}

async function runSearch() {
  const q = search.query;
  if (!q) return;
  if (search.abort) search.abort.abort();
  const abort = new AbortController();
  search.abort = abort;
  const status = $("search-status");
  setStatus(status, "Searching…", "busy");
  $("results").setAttribute("aria-busy", "true");
  $("search-again").hidden = false;
  let opts;
  if (q.file) {
    const form = new FormData();
    form.append("image", q.file, q.file.name || "pasted.png");
    opts = { method: "POST", body: form, signal: abort.signal };
  } else {
    opts = { method: "POST", json: { image_id: q.id }, signal: abort.signal };
  }
  try {
    const body = await api("/api/v1/search?" + searchParams(), opts);
    if (abort.signal.aborted) return;
    search.results = body.results || [];
    showCategory(body.category);
    updateLabelFilter();
    renderResults(true);
    const n = search.results.length;
    if (n === 0) {
      setStatus(status, Number($("min-score").value) > 0
        ? "No similar images above the minimum score. Lower it to see more."
        : "No similar images found. Add images in the Library first.");
    } else {
      setStatus(status, plural(n, "result") + " in " + Number(body.took_ms).toFixed(1) + " ms" +
                        (body.cached ? " (cached)" : ""));
    }
  } catch (e) {
    if (e.name === "AbortError" || abort.signal.aborted) return;
    search.results = [];
    showCategory(null);
    renderResults(true);
    setStatus(status, e.message, "error");
  } finally {
    if (search.abort === abort) {
      search.abort = null;
      $("results").removeAttribute("aria-busy");
    }
  }
}

function filteredResults() {
  const label = $("label-filter").value;
  return label ? search.results.filter((r) => r.metadata && r.metadata.label === label)
               : search.results;
}

function updateLabelFilter() {
  const labels = new Set();
  for (const r of search.results) if (r.metadata && r.metadata.label) labels.add(r.metadata.label);
  const select = $("label-filter");
  const current = select.value;
  const options = [el("option", { value: "", text: "All" })];
  for (const l of [...labels].sort()) options.push(el("option", { value: l, text: l }));
  select.replaceChildren(...options);
  select.value = labels.has(current) ? current : "";
  $("label-filter-wrap").hidden = labels.size === 0;
  for (const l of labels) addKnownLabel(l);
}

function renderResults(reset) {
  const list = $("results");
  const hits = filteredResults();
  if (reset) { list.replaceChildren(); search.shown = 0; }
  const next = hits.slice(search.shown, search.shown + RESULTS_PAGE);
  list.append(...next.map((r) => card(r, [
    ["More like this", "More like this", () => { searchById(r); $("query").focus(); }],
  ])));
  search.shown += next.length;
  $("results-more").hidden = search.shown >= hits.length;
}

autoMore($("results-more"), () => renderResults(false));
$("label-filter").addEventListener("change", () => renderResults(true));
$("top-k").addEventListener("change", runSearch);
$("min-score").addEventListener("input", () => {
  const v = Number($("min-score").value);
  $("min-score-out").textContent = v > 0 ? v.toFixed(2) : "off";
});
$("min-score").addEventListener("change", runSearch);
$("category-only").addEventListener("change", runSearch);
$("search-controls").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
$("query").tabIndex = -1;

for (const id of ["query-file", "query-camera"]) {
  $(id).addEventListener("change", (e) => {
    const file = e.target.files[0];
    e.target.value = "";  // picking the same file again searches again
    searchFile(file);
  });
}

// Paste button: the async clipboard API exists only in secure contexts.
if (navigator.clipboard && navigator.clipboard.read) {
  $("paste-btn").hidden = false;
  $("paste-btn").addEventListener("click", async () => {
    try {
      for (const item of await navigator.clipboard.read()) {
        const type = item.types.find((t) => t.startsWith("image/"));
        if (type) {
          const blob = await item.getType(type);
          searchFile(new File([blob], "pasted." + type.split("/")[1], { type }));
          return;
        }
      }
      setStatus($("search-status"), "The clipboard holds no image.", "error");
    } catch (e) {
      setStatus($("search-status"), "Cannot read the clipboard: " + e.message, "error");
    }
  });
}

// ----------------------------------------------------------------- library

const library = { after: 0, next: null, label: "", loading: false, loaded: false, count: 0 };
const knownLabels = new Set();

function addKnownLabel(label) {
  if (!label || knownLabels.has(label)) return;
  knownLabels.add(label);
  $("known-labels").append(el("option", { value: label }));
}

async function loadStats() {
  try {
    const s = await api("/api/v1/stats");
    const items = [["Images", s.count], ["Model", s.model], ["Dimension", s.dimension],
                   ["Index", s.index_kind]];
    if (s.index) {
      items.push(["Index on disk", formatBytes(s.index.disk_bytes)],
                 ["Index in RAM", formatBytes(s.index.ram_bytes)]);
      if (s.index.compacting) items.push(["Compaction", "running"]);
    }
    $("stats").replaceChildren(...items.map(([k, v]) =>
      el("div", {}, el("dt", { text: k }), el("dd", { text: String(v) }))));
    $("stats-line").textContent = plural(s.count, "image") + " · " + s.model;
    library.count = s.count;
    return s;
  } catch (e) {
    $("stats-line").textContent = "";
    return null;
  }
}

async function browse(reset) {
  if (library.loading) return;
  if (reset) {
    library.after = 0;
    library.next = null;
    library.label = $("browse-label").value.trim();
    $("library").replaceChildren();
  }
  library.loading = true;
  const status = $("library-status");
  setStatus(status, "Loading…", "busy");
  const p = new URLSearchParams({ limit: String(LIBRARY_PAGE) });
  if (library.after) p.set("after_id", String(library.after));
  if (library.label) p.set("label", library.label);
  try {
    const body = await api("/api/v1/images?" + p.toString());
    const images = body.images || [];
    for (const r of images) addKnownLabel(r.metadata && r.metadata.label);
    $("library").append(...images.map((r) => card(r, [
      ["Similar", "More like this", () => { location.hash = "#search"; searchById(r); }],
      ["Delete", "Delete", () => deleteImage(r)],
    ])));
    library.next = body.next_after_id;
    if (library.next) library.after = library.next;
    $("library-more").hidden = !library.next;
    const shown = $("library").children.length;
    setStatus(status, shown === 0
      ? (library.label ? "No images with the label “" + library.label + "”."
                       : "No images stored yet. Add some above, or start a build.")
      : "Showing " + plural(shown, "image") + (library.label ? " labelled “" + library.label + "”" : "") +
        (library.next ? "; more below." : "."));
    library.loaded = true;
  } catch (e) {
    setStatus(status, e.message, "error");
  } finally {
    library.loading = false;
  }
}

autoMore($("library-more"), () => { if (library.next) browse(false); });
$("browse-form").addEventListener("submit", (e) => { e.preventDefault(); browse(true); });
$("browse-refresh").addEventListener("click", () => { browse(true); loadStats(); });
$("forget-key").addEventListener("click", () => {
  try { localStorage.removeItem(KEY_STORAGE); } catch (e) { /* nothing stored */ }
  updateKeyButton();
  setStatus($("library-status"), "The API key was removed from this browser.");
});

// Near-duplicates (GET /api/v1/duplicates): each group's first image is the
// copy to keep; the others can be deleted one by one or all at once.
const DUPS_SHOWN = 50;  // groups drawn; each costs a request per image

async function findDuplicates() {
  const status = $("dups-status");
  setStatus(status, "Comparing every pair of images…", "busy");
  $("dups").replaceChildren();
  try {
    const t = $("dups-threshold").value;
    const body = await api("/api/v1/duplicates?threshold=" + encodeURIComponent(t));
    const groups = (body.groups || []).slice(0, DUPS_SHOWN);
    for (const ids of groups) {
      const records = await Promise.all(ids.map((id) => api("/api/v1/images/" + id)));
      const list = el("ul", { class: "grid", "aria-label": "Copies of " + (records[0].name || ids[0]) });
      list.append(...records.map((r, i) => card(r, i === 0 ? [] :
        [["Delete", "Delete copy", () => deleteImage(r)]])));
      list.firstChild.classList.add("keep");
      // The copies still shown: one may have been deleted with its own button.
      const extras = () => records.slice(1).filter((r) => list.querySelector('.card[data-id="' + r.id + '"]'));
      const all = el("button", { type: "button",
        onclick: async () => {
          const left = extras();
          if (!await confirmDialog("Delete " + left.length + (left.length === 1 ? " copy?" : " copies?"),
                                   "The first image of the group is kept.")) return;
          for (const r of left) {
            try { await api("/api/v1/images/" + r.id, { method: "DELETE" }); } catch (e) {
              setStatus(status, "Could not delete " + (r.name || r.id) + ": " + e.message, "error");
              return;
            }
            for (const c of document.querySelectorAll('.card[data-id="' + r.id + '"]')) c.remove();
          }
          group.remove();
          loadStats();
        } });
      const group = el("section", { class: "dup-group" }, list, all);
      // The button counts what is left; with no copy left the group goes.
      const refresh = () => {
        const n = extras().length;
        if (n === 0) group.remove();
        else all.textContent = "Delete the extra copies (" + n + ")";
      };
      refresh();
      new MutationObserver(refresh).observe(list, { childList: true, subtree: true });
      $("dups").append(group);
    }
    const total = body.total_groups ?? groups.length;
    setStatus(status, total === 0 ? "No near-duplicates at this similarity."
      : plural(total, "group") + " of copies" +
        (total > groups.length ? "; showing the " + groups.length + " largest." : "."));
  } catch (e) {
    setStatus(status, e.message, "error");
  }
}
$("dups-form").addEventListener("submit", (e) => { e.preventDefault(); findDuplicates(); });

// Uploads run UPLOAD_PARALLEL at a time, one request per file, so that each
// file has its own progress bar and its own error.
const uploadQueue = [];
let uploadsRunning = 0;

function uploadFiles(files) {
  const list = $("uploads");
  for (const file of files) {
    const row = {
      file,
      state: el("span", { class: "state", text: "Waiting" }),
      bar: el("progress", { max: 1, value: 0, "aria-label": "Upload of " + file.name }),
      msg: el("span", { class: "msg" }),
    };
    row.li = el("li", {}, el("span", { class: "fname", title: file.name, text: file.name }),
                row.state, row.bar, row.msg);
    list.prepend(row.li);
    uploadQueue.push(row);
  }
  pumpUploads();
}

function pumpUploads() {
  while (uploadsRunning < UPLOAD_PARALLEL && uploadQueue.length) {
    const row = uploadQueue.shift();
    uploadsRunning++;
    row.state.textContent = "Uploading";
    uploadFile(row.file, (f) => {
      row.bar.value = f;
      row.state.textContent = "Uploading " + Math.round(f * 100) + "%";
    }).then((id) => {
      row.li.className = "done";
      row.bar.value = 1;
      row.state.textContent = "Stored";
      row.msg.replaceChildren("As image #" + id + ". ",
        el("button", { type: "button", class: "link", text: "Show",
          "aria-label": "Show " + row.file.name,
          onclick: async (e) => {
            const opener = e.currentTarget;
            try { openDetail(await api("/api/v1/images/" + id), opener); }
            catch (err) { row.msg.textContent = err.message; }
          } }));
    }, (e) => {
      row.li.className = "error";
      row.bar.hidden = true;
      row.state.textContent = "Failed";
      row.msg.textContent = e.message;
    }).finally(() => {
      uploadsRunning--;
      if (uploadQueue.length) pumpUploads();
      else if (uploadsRunning === 0) { loadStats(); browse(true); }
    });
  }
}

$("upload-files").addEventListener("change", (e) => {
  const files = [...e.target.files];
  e.target.value = "";
  uploadFiles(files);
});

// ------------------------------------------------------------------ builds

const builds = { timer: null, jobs: new Map() };

function buildItem(job) {
  const total = job.total || 0;
  const running = job.state === "running" || job.state === "queued";
  const bar = el("progress", { max: Math.max(total, 1), "aria-label": "Progress of build " + job.id });
  if (total > 0 || !running) bar.value = total > 0 ? job.processed : 1;  // else indeterminate
  const figures = el("div", { class: "figures" },
    el("span", { text: "Processed " + job.processed + (total ? " / " + total : "") }),
    el("span", { text: "Failed " + job.failed }),
    el("span", { text: "Rate " + (job.rate || 0).toFixed(1) + " files/s" }));
  if (running) figures.append(el("span", { text: "ETA " + (total ? formatDuration(job.eta_s) : "—") }));
  else figures.append(el("span", { text: "Stored " + job.indexed }),
                      el("span", { text: "Already stored " + job.skipped }));
  const item = el("li", { class: "build", "data-build": String(job.id) },
    el("div", { class: "build-head" },
      el("span", { class: "build-path", text: "#" + job.id + " " + job.path }),
      el("span", { class: "state-" + job.state, text: job.state })),
    bar, figures);
  if (job.error) item.append(el("p", { class: "status error", text: job.error }));
  if (job.failures && job.failures.length) {
    const details = el("details", { class: "failures", open: job.failures.length <= 10 },
      el("summary", { text: plural(job.failures.length, "file") + " could not be stored" }),
      el("ul", {}, ...job.failures.map((f) => el("li", {},
        el("code", { text: f.path }), " — ", el("span", { class: "reason", text: f.reason })))));
    item.append(details);
  }
  return item;
}

function renderBuilds() {
  const jobs = [...builds.jobs.values()].sort((a, b) => b.id - a.id);
  const list = $("builds");
  // Keep an open/closed failures list as the user left it across refreshes.
  const open = new Map([...list.querySelectorAll("[data-build]")].map((li) => {
    const d = li.querySelector("details");
    return [li.dataset.build, d ? d.open : null];
  }));
  list.replaceChildren(...jobs.map((job) => {
    const item = buildItem(job);
    const d = item.querySelector("details");
    const was = open.get(String(job.id));
    if (d && was !== null && was !== undefined) d.open = was;
    return item;
  }));
  if (jobs.length === 0) setStatus($("builds-status"), "No builds yet.");
}

async function refreshBuilds() {
  try {
    const body = await api("/api/v1/builds");
    builds.jobs = new Map((body.builds || []).map((j) => [j.id, j]));
    renderBuilds();
    const active = (body.builds || []).some((j) => j.state === "running" || j.state === "queued");
    clearTimeout(builds.timer);
    if (active) builds.timer = setTimeout(refreshBuilds, BUILD_POLL_MS);
    else loadStats();
  } catch (e) {
    setStatus($("builds-status"), e.message, "error");
    clearTimeout(builds.timer);
    builds.timer = setTimeout(refreshBuilds, BUILD_POLL_MS * 5);
  }
}

$("build-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const path = $("build-path").value.trim();
  const status = $("builds-status");
  if (!path) { setStatus(status, "Enter a folder on the server.", "error"); $("build-path").focus(); return; }
  setStatus(status, "Starting…", "busy");
  try {
    const job = await api("/api/v1/builds", { method: "POST", json: { path } });
    setStatus(status, "Build #" + job.id + " started.");
    builds.jobs.set(job.id, job);
    renderBuilds();
    clearTimeout(builds.timer);
    builds.timer = setTimeout(refreshBuilds, 300);
  } catch (err) {
    setStatus(status, err.message, "error");
  }
});

// --------------------------------------------------------------- evaluate

// POST /api/v1/evaluations starts a background job; its result is what
// `pixseek eval --json` prints (docs/quality.md).
const evaluation = { timer: null, id: null };
const EVAL_COLUMNS = [["mAP", "map"], ["mAP@100", "map_at_100"], ["P@1", "p_at_1"], ["P@10", "p_at_10"],
                      ["R@10", "r_at_10"], ["NDCG@10", "ndcg_at_10"], ["NDCG@100", "ndcg_at_100"]];
const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function metricsHead() {
  return el("tr", {}, el("th", { scope: "col", text: "" }), el("th", { scope: "col", text: "Queries" }),
            ...EVAL_COLUMNS.map(([name]) => el("th", { scope: "col", text: name })));
}

function metricsRow(name, m, cls) {
  return el("tr", { class: cls }, el("th", { scope: "row", text: name }), el("td", { text: String(m.queries) }),
            ...EVAL_COLUMNS.map(([, key]) => el("td", { text: m[key].toFixed(3) })));
}

// The mean interpolated precision-recall curves, over queries and over classes.
function prPlot(result) {
  const W = 320, H = 240, L = 40, T = 10, PW = 270, PH = 190;
  const x = (r) => L + r * PW, y = (p) => T + (1 - p) * PH;
  const line = (curve, cls) => svgEl("polyline", { class: cls, points: curve.map(([r, p]) => x(r) + "," + y(p)).join(" ") });
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Precision-recall curve" });
  for (const v of [0, 0.5, 1]) {
    svg.append(svgEl("line", { class: "grid", x1: x(0), x2: x(1), y1: y(v), y2: y(v) }),
               svgEl("line", { class: "grid", x1: x(v), x2: x(v), y1: y(0), y2: y(1) }),
               svgEl("text", { x: x(0) - 6, y: y(v) + 4, "text-anchor": "end" }, String(v)),
               svgEl("text", { x: x(v), y: y(0) + 16, "text-anchor": "middle" }, String(v)));
  }
  svg.append(svgEl("text", { x: x(0.5), y: H - 2, "text-anchor": "middle" }, "recall"),
             line(result.macro.pr_curve, "macro"), line(result.overall.pr_curve, "overall"));
  for (const [r, p] of result.overall.pr_curve_11) svg.append(svgEl("circle", { cx: x(r), cy: y(p), r: 2.5 }));
  return svg;
}

function showEvaluation(result) {
  $("eval-summary").replaceChildren(el("thead", {}, metricsHead()),
    el("tbody", {}, metricsRow("overall", result.overall, "overall"), metricsRow("macro", result.macro, "macro")));
  $("eval-index").textContent = `The index on ${result.index_queries} ${result.index_queries === 1 ? "query" : "queries"}: its top ${result.index_k} ` +
    `holds ${result.index_recall_at_k.toFixed(3)} of the exact top ${result.index_k}; mAP@100 through it ` +
    `${result.index_map_at_k.toFixed(3)} against ${result.index_exact_map_at_k.toFixed(3)} exact. ` +
    `${plural(result.images, "image")}, ${formatDuration(result.seconds)}.`;
  $("eval-pr").replaceChildren(prPlot(result),
    el("p", { class: "muted key" }, el("span", { class: "swatch overall" }), " over queries (dots: 11-point) ",
       el("span", { class: "swatch macro" }), " over classes"));
  const classes = Object.entries(result.per_label).sort((a, b) => a[1].map - b[1].map);
  $("eval-classes").replaceChildren(el("thead", {}, metricsHead()),
    el("tbody", {}, ...classes.map(([label, m]) => metricsRow(label, m, "class"))));
  $("eval-result").hidden = false;
}

function showEvaluationJob(job) {
  const bar = $("eval-progress");
  const running = job.state === "queued" || job.state === "running";
  bar.hidden = !running;
  if (job.total > 0) { bar.max = job.total; bar.value = job.done; } else bar.removeAttribute("value");
  if (running) {
    setStatus($("eval-status"), `Evaluation #${job.id} ${job.state}: ${job.done} / ${job.total || "?"} queries` +
              (job.eta_s > 0 ? ", ETA " + formatDuration(job.eta_s) : ""), "busy");
  } else if (job.state === "done") {
    setStatus($("eval-status"), `Evaluation #${job.id} done.`);
    showEvaluation(job.result);
  } else {
    setStatus($("eval-status"), job.error || "Evaluation " + job.state + ".", "error");
  }
  return running;
}

async function pollEvaluation() {
  clearTimeout(evaluation.timer);
  try {
    const job = await api("/api/v1/evaluations/" + evaluation.id);
    if (showEvaluationJob(job)) evaluation.timer = setTimeout(pollEvaluation, EVAL_POLL_MS);
  } catch (e) {
    setStatus($("eval-status"), e.message, "error");
  }
}

$("eval-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const path = $("eval-path").value.trim();
  const status = $("eval-status");
  if (!path) { setStatus(status, "Enter the folder the database was built from.", "error"); $("eval-path").focus(); return; }
  setStatus(status, "Starting…", "busy");
  $("eval-result").hidden = true;
  try {
    const job = await api("/api/v1/evaluations", { method: "POST", json: { path, split: $("eval-split").value } });
    evaluation.id = job.id;
    showEvaluationJob(job);
    evaluation.timer = setTimeout(pollEvaluation, 200);
  } catch (err) {
    setStatus(status, err.message, "error");
  }
});

// ------------------------------------------------------- drag, drop, paste

// Anywhere on the page: a dropped or pasted image is a query on the Search
// view and an upload on the Library view. Elsewhere nothing is taken (and
// the browser does not navigate away to the dropped file).
function imageFiles(list) { return [...(list || [])].filter((f) => f.type.startsWith("image/") || !f.type); }

let dragDepth = 0;
function dropZone() { return currentView === "library" ? $("upload-drop") : $("query-drop"); }
document.addEventListener("dragenter", (e) => {
  if (!e.dataTransfer || ![...e.dataTransfer.types].includes("Files")) return;
  dragDepth++;
  dropZone().classList.add("over");
});
document.addEventListener("dragleave", () => {
  if (--dragDepth <= 0) { dragDepth = 0; dropZone().classList.remove("over"); }
});
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  dropZone().classList.remove("over");
  const files = [...(e.dataTransfer ? e.dataTransfer.files : [])];
  if (currentView === "search") searchFile(files[0]);
  else if (currentView === "library") uploadFiles(files);
});
document.addEventListener("paste", (e) => {
  const target = e.target;
  if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) return;
  const files = imageFiles([...((e.clipboardData && e.clipboardData.items) || [])]
    .filter((i) => i.kind === "file").map((i) => i.getAsFile()));
  if (files.length === 0) return;
  e.preventDefault();
  if (currentView === "search") searchFile(files[0]);
  else if (currentView === "library") uploadFiles(files);
});

// ----------------------------------------------------------- views, offline

let currentView = "";

function showView(focus) {
  const name = (location.hash || "#search").slice(1);
  const known = ["search", "library", "builds", "evaluate"].includes(name);
  // Other fragments (the skip link's #main) leave the view as it is.
  const view = known ? name : currentView || "search";
  if (view === currentView) return;
  currentView = view;
  for (const v of ["search", "library", "builds", "evaluate"]) $("view-" + v).hidden = v !== view;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = "pixseek — " + view.charAt(0).toUpperCase() + view.slice(1);
  if (view === "library") { loadStats(); if (!library.loaded) browse(true); }
  if (view === "builds") refreshBuilds();
  if (focus) $("main").focus({ preventScroll: true });
}
window.addEventListener("hashchange", () => showView(true));

function updateOnline() { $("offline").hidden = navigator.onLine; }
window.addEventListener("online", () => { updateOnline(); loadStats(); });
window.addEventListener("offline", updateOnline);

updateOnline();
updateKeyButton();
showView(false);
loadStats();

// The service worker keeps the app itself available offline (it never
// caches API answers). Browsers allow it on https and on localhost only.
if ("serviceWorker" in navigator && window.isSecureContext) {
  navigator.serviceWorker.register("/sw.js").catch(() => { /* the app works without it */ });
}
