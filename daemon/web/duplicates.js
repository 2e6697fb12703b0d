// The duplicates view: the groups GET /duplicates finds, side by side with their sizes and dates, the suggested
// keeper marked with why; "Keep this one" moves the group's other copies to the trash (POST /items/{id}/trash,
// never a hard delete) once the person confirms.
"use strict";

async function showDuplicates() {
  const view = $("duplicates-view");
  $("summary").textContent = "looking for duplicates…";
  $("notes").replaceChildren();
  view.replaceChildren();
  let found;
  try {
    found = await api("GET", "/duplicates");
  } catch (error) {
    $("summary").textContent = error.message;
    return;
  }
  const groups = found.groups;
  $("summary").textContent = groups.length
    ? `${groups.length} group${groups.length === 1 ? "" : "s"} of copies among ${found.compared} images`
    : `no duplicates among ${found.compared} images`;
  $("notes").replaceChildren(...(found.notes || []).map((n) => el("li", {}, n)));
  view.replaceChildren(...groups.map(duplicateGroup));
}

function duplicateGroup(group) {
  const box = el("article", { class: "dup-group" });
  const keeper = group.items.find((item) => String(item.id) === String(group.keeper));
  box.append(el("h2", {}, `Suggested: keep ${basename(keeper.path)} — ${group.why}`));
  const items = el("div", { class: "dup-items" });
  for (const item of group.items) items.append(duplicateItem(group, item, box));
  const status = el("p", { class: "dup-status", "aria-live": "polite" });
  box.append(items, status);
  return box;
}

function duplicateItem(group, item, box) {
  const isKeeper = String(item.id) === String(group.keeper);
  const card = el("div", { class: `dup-item${isKeeper ? " keeper" : ""}`, "data-id": String(item.id) });
  const open = el("button", { type: "button", class: "thumb-open", title: item.path });
  open.append(el("img", { src: `/thumbnail/${item.id}?size=256&v=${item.mtime_ns}`, alt: basename(item.path), loading: "lazy" }));
  open.addEventListener("click", () => openDetail(item.id));
  const when = item.taken ? item.taken.slice(0, 10) : new Date(Number(item.mtime_ns) / 1e6).toISOString().slice(0, 10);
  const facts = `${item.width}×${item.height} · ${item.format} · ${Math.max(1, Math.round(item.size / 1024))} KB · ${when}`;
  card.append(open, el("span", { class: "name" }, basename(item.path)), el("span", { class: "facts" }, facts));
  if (isKeeper) card.append(el("span", { class: "badge" }, "suggested keeper"));
  const keep = el("button", { type: "button", class: "keep" }, "Keep this one, trash the others");
  keep.addEventListener("click", () => keepOnly(group, item, box));
  card.append(keep);
  return card;
}

async function keepOnly(group, item, box) {
  const others = group.items.filter((other) => String(other.id) !== String(item.id));
  const names = others.map((other) => basename(other.path)).join(", ");
  if (!confirm(`Keep ${basename(item.path)} and move ${others.length} other cop${others.length === 1 ? "y" : "ies"} ` +
               `to the trash (with their sidecars)?\n\n${names}\n\nThe file manager's trash can restore them.`)) return;
  const status = box.querySelector(".dup-status");
  const failed = [];
  for (const other of others) {
    try {
      await api("POST", `/items/${other.id}/trash`, {});
      box.querySelector(`.dup-item[data-id="${other.id}"]`).remove();
    } catch (error) {
      failed.push(`${basename(other.path)}: ${error.message}`);
    }
  }
  status.textContent = failed.length ? `not moved: ${failed.join("; ")}`
    : `kept ${basename(item.path)}; ${others.length} moved to the trash`;
  for (const button of box.querySelectorAll("button.keep")) button.remove();
}
