// The page's own small SVG line charts, and the rates they draw over the last 15 minutes.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600;
const HEIGHT = 170;
const LEFT = 40;
const RIGHT = 8;
const TOP = 8;
const BOTTOM = 20;
export const SPAN_SECONDS = 900;
// Each point sums the tasks of the minute before it, so the lines read as "per minute".
const WINDOW_SECONDS = 60;

function element(parent, name, attributes) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return parent.appendChild(node);
}

// The smallest of 1, 2, 5 x 10^n at or above `value` (an axis that reads well).
function roundUp(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((step) => step * power).find((step) => step >= value);
}

// One chart: its grid, labels and lines are built once; draw() only moves them.
export class LineChart {
  constructor(svg, lines, { fixedMax = null, unit = "" } = {}) {
    this.svg = svg;
    this.fixedMax = fixedMax;
    this.unit = unit;
    svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    this.rows = [0, 0.5, 1].map((fraction) => {
      const y = TOP + (1 - fraction) * (HEIGHT - TOP - BOTTOM);
      element(svg, "line", { class: "grid", x1: LEFT, x2: WIDTH - RIGHT, y1: y, y2: y });
      return { fraction, label: element(svg, "text", { class: "axis", x: LEFT - 4, y: y + 4, "text-anchor": "end" }) };
    });
    [15, 10, 5, 0].forEach((minutes) => {
      const x = LEFT + (1 - minutes / 15) * (WIDTH - LEFT - RIGHT);
      const label = element(svg, "text", { class: "axis", x, y: HEIGHT - 5, "text-anchor": minutes === 0 ? "end" : minutes === 15 ? "start" : "middle" });
      label.textContent = minutes === 0 ? "now" : `−${minutes} min`;
    });
    this.paths = lines.map((cls) => element(svg, "path", { class: `line ${cls}`, d: "" }));
  }

  // `series`: one array per line of [unix seconds, value or null]; `now`: the right edge.
  draw(series, now) {
    const values = series.flat().map(([, value]) => value).filter((v) => v !== null);
    const max = this.fixedMax ?? roundUp(Math.max(0, ...values));
    for (const row of this.rows) {
      const text = `${+(max * row.fraction).toFixed(2)}${this.unit}`;
      if (row.label.textContent !== text) row.label.textContent = text;
    }
    const x = (t) => LEFT + (1 - (now - t) / SPAN_SECONDS) * (WIDTH - LEFT - RIGHT);
    const y = (v) => TOP + (1 - Math.min(v, max) / max) * (HEIGHT - TOP - BOTTOM);
    series.forEach((points, index) => {
      let d = "";
      let drawing = false;
      for (const [t, value] of points) {
        if (value === null || now - t > SPAN_SECONDS) {
          drawing = false;
          continue;
        }
        d += `${drawing ? "L" : "M"}${x(t).toFixed(1)},${y(value).toFixed(1)}`;
        drawing = true;
      }
      this.paths[index].setAttribute("d", d);
    });
    return max;
  }
}

// Rates at each point: tasks finished and failed in the minute before it, and the failure
// rate (failed / (succeeded + failed), null when none did either). `points` are
// [unix seconds, succeeded, failed, finished] in time order.
export function perMinute(points) {
  const finished = [];
  const failed = [];
  const failureRate = [];
  let start = 0;
  let sums = [0, 0, 0];
  points.forEach(([t, success, failure, total]) => {
    sums = [sums[0] + success, sums[1] + failure, sums[2] + total];
    while (points[start][0] <= t - WINDOW_SECONDS) {
      const [, s, f, n] = points[start];
      sums = [sums[0] - s, sums[1] - f, sums[2] - n];
      start += 1;
    }
    finished.push([t, sums[2]]);
    failed.push([t, sums[1]]);
    const decided = sums[0] + sums[1];
    failureRate.push([t, decided ? (100 * sums[1]) / decided : null]);
  });
  return { finished, failed, failureRate };
}

// The frames' series, [t, success, failure, retry, revoked, rejected] since the point
// before, as perMinute's points (retries are not finished).
export function clusterPoints(series) {
  return series.map(([t, success, failure, , revoked, rejected]) =>
    [t, success, failure, success + failure + revoked + rejected]);
}

// One task's finished entries (from its history) counted on the frames' time grid, so the
// task's lines and the cluster's read alike; the first point only starts the grid.
export function taskPoints(series, entries) {
  const ended = entries.map((entry) => [entry.ended, entry.state]).sort((a, b) => a[0] - b[0]);
  let next = 0;
  return series.map(([t], index) => {
    const after = index > 0 ? series[index - 1][0] : t;
    const counts = { success: 0, failure: 0, finished: 0 };
    while (next < ended.length && ended[next][0] <= t) {
      const [when, state] = ended[next];
      next += 1;
      if (when <= after) continue;
      if (state === "success" || state === "failure") counts[state] += 1;
      if (state !== "retry") counts.finished += 1;
    }
    return [t, counts.success, counts.failure, counts.finished];
  });
}
