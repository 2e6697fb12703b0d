// The timeline: every image by the date it was taken (else the file's), newest first, under month headings, with a
// bar to jump to a year (GET /timeline).
"use strict";

const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
                "November", "December"];

async function showTimeline() {
  $("summary").textContent = "loading the timeline…";
  $("notes").replaceChildren();
  let found;
  try {
    found = await api("GET", "/timeline?k=5000");
  } catch (error) {
    $("summary").textContent = error.message;
    return;
  }
  const months = new Map();
  for (const item of found.items) {
    const key = item.date.slice(0, 7);
    if (!months.has(key)) months.set(key, []);
    months.get(key).push(item);
  }
  const years = [...new Set([...months.keys()].map((key) => key.slice(0, 4)))];
  $("years").replaceChildren(...years.map((year) => {
    const jump = el("button", { type: "button", "data-year": year }, year);
    jump.addEventListener("click", () => $("months").querySelector(`[data-year="${year}"]`).scrollIntoView());
    return jump;
  }));
  $("months").replaceChildren(...[...months].map(([key, items]) => month(key, items)));
  $("summary").textContent = `${found.items.length} image${found.items.length === 1 ? "" : "s"} by date taken` +
    (found.more ? " (the newest 5000)" : "");
}

function month(key, items) {
  const [year, number] = key.split("-");
  const section = el("section", { class: "month", "data-year": year, "data-month": key });
  section.append(el("h2", {}, `${MONTHS[Number(number) - 1] || number} ${year}`));
  const thumbs = el("div", { class: "thumbs" });
  for (const item of items) {
    const thumb = el("button", { type: "button", class: "thumb", title: item.path, "data-id": String(item.id) });
    thumb.append(el("img", { src: `/thumbnail/${item.id}?size=128&v=${item.mtime_ns}`, alt: basename(item.path),
                             loading: "lazy" }));
    thumb.addEventListener("click", () => openDetail(item.id));
    thumbs.append(thumb);
  }
  section.append(thumbs);
  return section;
}
