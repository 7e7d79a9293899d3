// The usage chart: requests over time stacked by outcome, as inline SVG drawn here (no library),
// with a text summary for screen readers and the same numbers as a table.

import { el, fill, num, svg } from './lib.js';

/** Outcomes in stacking order (bottom first), with their legend labels. */
export const OUTCOMES = [
  ['2xx', '2xx success'],
  ['3xx', '3xx redirect'],
  ['4xx', '4xx client error'],
  ['5xx', '5xx origin error'],
  ['401', '401 unauthenticated'],
  ['403', '403 forbidden'],
  ['429', '429 rate limited'],
  ['edge_4xx', 'edge 404/405'],
  ['edge_5xx', 'edge error'],
];

const PAD = { top: 12, right: 8, bottom: 28, left: 44 };

function label(start, granularity) {
  const d = new Date(start * 1000);
  if (granularity === 'day') return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
  if (granularity === 'minute') return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  return d.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit' });
}

function niceMax(n) {
  if (n <= 4) return 4;
  const p = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 2.5, 5, 10]) if (n <= m * p) return m * p;
  return n;
}

/** Draws `usage` (the API's usage answer) into `figure`, and its table into `tableBox`. */
export function drawUsage(figure, tableBox, usage, rangeLabel) {
  // The drawing is as wide as its box, so the axis text stays at its CSS size on a phone.
  const W = Math.round(Math.max(300, Math.min(1200, figure.clientWidth || 720)));
  const H = W < 500 ? 200 : 240;
  const series = usage.series || [];
  const total = usage.totals?.requests ?? series.reduce((s, b) => s + (b.requests || 0), 0);
  const peak = Math.max(0, ...series.map((b) => b.requests || 0));
  const max = niceMax(peak);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = series.length ? plotW / series.length : plotW;
  const barW = Math.max(1, slot * 0.8);
  const y = (v) => PAD.top + plotH - (v / max) * plotH;

  const busiest = series.reduce((best, b) => ((b.requests || 0) > (best?.requests || 0) ? b : best), null);
  const summary = total
    ? `${num(total)} requests in the ${rangeLabel}; busiest ${usage.granularity}: ${label(busiest.start, usage.granularity)} with ${num(busiest.requests)}.`
    : `No requests in the ${rangeLabel}.`;

  const chart = svg('svg', {
    class: 'usage-chart',
    viewBox: `0 0 ${W} ${H}`,
    role: 'img',
    'aria-label': `Requests per ${usage.granularity}, stacked by outcome. ${summary}`,
  });
  // Grid lines and the y axis.
  for (let i = 0; i <= 4; i += 1) {
    const v = (max / 4) * i;
    chart.append(
      svg('line', { class: 'grid', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
      svg('text', { class: 'axis', x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end', text: num(v) }),
    );
  }
  // Bars: one stacked column per bucket; a segment per outcome with a non-zero count.
  series.forEach((b, i) => {
    const x = PAD.left + i * slot + (slot - barW) / 2;
    const g = svg('g', { class: 'bucket', 'data-start': b.start, 'data-requests': b.requests || 0 });
    let base = 0;
    for (const [key, name] of OUTCOMES) {
      const n = b.by_outcome?.[key] || 0;
      if (!n) continue;
      const top = y(base + n);
      const rect = svg('rect', {
        class: `bar o-${key}`,
        x: x.toFixed(2),
        y: top.toFixed(2),
        width: barW.toFixed(2),
        height: Math.max(1, y(base) - top).toFixed(2),
        'data-outcome': key,
        'data-count': n,
      }, svg('title', { text: `${label(b.start, usage.granularity)}: ${num(n)} × ${name}` }));
      g.append(rect);
      base += n;
    }
    chart.append(g);
  });
  // A few x labels: first, middle (when there is room) and last.
  const middle = W < 500 ? [] : [Math.floor(series.length / 2)];
  const marks = series.length ? [...new Set([0, ...middle, series.length - 1])] : [];
  for (const i of marks) {
    const x = PAD.left + i * slot + slot / 2;
    const anchor = i === 0 ? 'start' : i === series.length - 1 ? 'end' : 'middle';
    chart.append(svg('text', { class: 'axis', x: i === 0 ? PAD.left : x, y: H - 8, 'text-anchor': anchor, text: label(series[i].start, usage.granularity) }));
  }
  chart.append(svg('line', { class: 'baseline', x1: PAD.left, x2: W - PAD.right, y1: y(0), y2: y(0) }));

  const legend = el('ul', { class: 'legend', 'aria-label': 'Outcomes' },
    OUTCOMES.map(([key, name]) => el('li', {},
      el('span', { class: `swatch o-${key}`, 'aria-hidden': 'true' }),
      `${name}: ${num(usage.totals?.by_outcome?.[key] ?? 0)}`)));
  fill(figure, chart, el('figcaption', {}, summary), legend);
  last = [figure, tableBox, usage, rangeLabel];

  // The accessible alternative: every non-empty bucket as a table row.
  const rows = series.filter((b) => b.requests);
  fill(tableBox, rows.length
    ? el('table', { class: 'numbers' },
      el('caption', {}, `Requests per ${usage.granularity} by outcome, ${rangeLabel}`),
      el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'From'), el('th', { scope: 'col' }, 'Total'),
        OUTCOMES.map(([key]) => el('th', { scope: 'col' }, key)))),
      el('tbody', {}, rows.map((b) => el('tr', {},
        el('th', { scope: 'row' }, label(b.start, usage.granularity)), el('td', {}, num(b.requests)),
        OUTCOMES.map(([key]) => el('td', {}, num(b.by_outcome?.[key] || 0)))))))
    : el('p', {}, 'No requests in this range.'));
}

// Redraw at the new width when the window is resized.
let last = null;
let resizeTimer = null;
addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    if (last) drawUsage(...last);
  }, 150);
});
