// What every part of the page uses: table rows kept by key, and the formats of numbers.

export const byId = (id) => document.getElementById(id);

export function setText(node, value) {
  const text = value === null || value === undefined ? "" : String(value);
  if (node.textContent !== text) node.textContent = text;
}

// A cell is text, or {text, cls}, {pill, cls} (text in a coloured label), {href, text}, or
// {buttons: [{text, data, cls, label}]}; `num` aligns it right, `title` explains it.
function fillCell(cell, spec) {
  const part = spec !== null && typeof spec === "object" ? spec : { text: spec };
  const kind = part.buttons ? "buttons" : part.href ? "link" : part.pill ? "pill" : "text";
  if (cell.dataset.kind !== kind) {
    cell.replaceChildren();
    cell.dataset.kind = kind;
  }
  const cls = [part.num ? "num" : "", kind === "text" ? part.cls || "" : ""].join(" ").trim();
  if (cell.className !== cls) cell.className = cls;
  if (cell.title !== (part.title || "")) cell.title = part.title || "";
  if (kind === "text") {
    setText(cell, part.text);
    return;
  }
  if (kind === "pill") {
    const pill = cell.firstChild || cell.appendChild(document.createElement("span"));
    pill.className = `pill ${part.cls || ""}`;
    setText(pill, part.pill);
    return;
  }
  if (kind === "link") {
    const link = cell.firstChild || cell.appendChild(document.createElement("a"));
    if (link.getAttribute("href") !== part.href) link.setAttribute("href", part.href);
    setText(link, part.text);
    return;
  }
  const buttons = part.buttons.filter(Boolean);
  while (cell.children.length > buttons.length) cell.lastChild.remove();
  buttons.forEach((spec, index) => {
    let button = cell.children[index];
    if (!button) {
      button = cell.appendChild(document.createElement("button"));
      button.type = "button";
    }
    button.className = spec.cls || "";
    setText(button, spec.text);
    for (const [key, value] of Object.entries(spec.data)) {
      if (button.dataset[key] !== value) button.dataset[key] = value;
    }
    if (spec.label) button.setAttribute("aria-label", spec.label);
  });
}

// A table body whose rows are reused by key: an update touches the cells that change, and
// the page holds only the rows it shows however long it stays open.
export class Rows {
  constructor(tbody, empty) {
    this.tbody = tbody;
    this.empty = empty;
    this.rows = new Map();
  }

  update(items, keyOf, cellsOf) {
    const seen = new Set();
    let previous = null;
    for (const item of items) {
      const key = keyOf(item);
      if (seen.has(key)) continue;
      seen.add(key);
      let row = this.rows.get(key);
      if (!row) {
        row = document.createElement("tr");
        row.dataset.key = key;
        this.rows.set(key, row);
      }
      const cells = cellsOf(item);
      while (row.cells.length < cells.length) row.appendChild(document.createElement("td"));
      cells.forEach((spec, index) => fillCell(row.cells[index], spec));
      const expected = previous ? previous.nextSibling : this.tbody.firstChild;
      if (row !== expected) this.tbody.insertBefore(row, expected);
      previous = row;
    }
    for (const [key, row] of this.rows) {
      if (!seen.has(key)) {
        row.remove();
        this.rows.delete(key);
      }
    }
    if (this.empty) this.empty.hidden = seen.size > 0;
  }
}

const pad = (n) => String(n).padStart(2, "0");

// Unix seconds as the local HH:MM:SS.
export function clock(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const date = new Date(seconds * 1000);
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.floor(s)} s`;
  const minutes = Math.floor(s / 60);
  if (minutes < 60) return `${minutes} min ${pad(Math.floor(s % 60))} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours} h ${pad(minutes % 60)} min`;
  return `${Math.floor(hours / 24)} d ${pad(hours % 24)} h`;
}

export function bytes(value) {
  if (value === null || value === undefined) return "–";
  const mib = value / 2 ** 20;
  return mib >= 1024 ? `${(mib / 1024).toFixed(1)} GiB` : `${mib.toFixed(1)} MiB`;
}

export const count = (value) => (value === null || value === undefined ? "–" : String(value));
