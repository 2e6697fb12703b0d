// Curation on the page: a rating control (stars; the same one for the detail view and for a selection), and the
// selection of many images in the grid, rated, tagged or untagged in one PATCH /items — each sidecar written as
// the detail view writes it; the answer says which succeeded.
"use strict";

function drawStars(container, value, onPick) {
  const buttons = [];
  for (let n = 1; n <= 5; n++) {
    const star = el("button", { type: "button", "data-rating": String(n), "aria-label": `${n} star${n === 1 ? "" : "s"}`,
                                "aria-pressed": String(value != null && n <= value) }, "★");
    star.addEventListener("click", () => onPick(n === value ? 0 : n));  // the same star again: no rating
    buttons.push(star);
  }
  container.replaceChildren(...buttons);
}

// The colour labels Lightroom, darktable and digiKam share (xmp:Label); the current one again removes it.
const LABELS = ["Red", "Yellow", "Green", "Blue", "Purple"];

function drawLabels(container, value, onPick) {
  container.replaceChildren(...LABELS.map((label) => {
    const swatch = el("button", { type: "button", class: `label label-${label.toLowerCase()}`, "data-label": label,
                                  "aria-label": label, title: label, "aria-pressed": String(label === value) });
    swatch.addEventListener("click", () => onPick(label === value ? "" : label));
    return swatch;
  }));
}

function startCuration() {
  $("select").addEventListener("click", () => setSelecting(!state.selecting));
  $("bulk-clear").addEventListener("click", () => { state.selected.clear(); redrawSelection(); });
  drawStars($("bulk-rating"), null, (rating) => applyBulk({ rating }, `rated ${rating || "none"}`));
  $("bulk-tag").addEventListener("submit", (event) => {
    event.preventDefault();
    const keyword = $("bulk-keyword").value.trim();
    if (!keyword) return;
    const remove = event.submitter && event.submitter.value === "remove";
    applyBulk(remove ? { remove_tags: [keyword] } : { add_tags: [keyword] },
              remove ? `removed “${keyword}”` : `added “${keyword}”`).then(() => { $("bulk-keyword").value = ""; });
  });
}

function setSelecting(on) {
  state.selecting = on;
  $("select").setAttribute("aria-pressed", String(on));
  if (!on) state.selected.clear();
  if (on && state.view !== "results") setView("results");
  redrawSelection();
}

function toggleSelected(id, node) {
  const key = String(id);
  if (state.selected.has(key)) state.selected.delete(key); else state.selected.add(key);
  node.classList.toggle("selected", state.selected.has(key));
  redrawSelection(false);
}

function redrawSelection(cells = true) {
  const count = state.selected.size;
  $("bulk").hidden = !state.selecting;
  $("bulk-count").textContent = `${count} selected`;
  if (cells) {
    for (const node of $("grid").children) node.classList.toggle("selected", state.selected.has(node.dataset.id));
  }
}

async function applyBulk(change, done) {
  const ids = [...state.selected];
  if (!ids.length) {
    $("bulk-status").textContent = "select images first: click them in the grid";
    return;
  }
  $("bulk-status").textContent = "saving…";
  try {
    // Ids stay strings in the page (63-bit); the body sends them as JSON numbers, digit for digit.
    const body = JSON.stringify(change).replace(/^\{/, `{"ids":[${ids.join(",")}],`);
    const answer = await bulkPatch(body);
    const failed = answer.results.filter((r) => !r.ok);
    $("bulk-status").textContent = failed.length
      ? `${done} on ${answer.ok} of ${ids.length}; not changed: ${failed.map((r) => r.error).join("; ")}`
      : `${done} on ${answer.ok} image${answer.ok === 1 ? "" : "s"}`;
    if (change.rating !== undefined) drawStars($("bulk-rating"), change.rating, (rating) => applyBulk({ rating }, `rated ${rating || "none"}`));
  } catch (error) {
    $("bulk-status").textContent = error.message;
  }
}

async function bulkPatch(body) {
  const response = await fetch("/items", { method: "PATCH", credentials: "same-origin",
                                           headers: { "Content-Type": "application/json" }, body });
  const data = parseJSON(await response.text());
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}
