// A dependency-free SVG chart of (b) last-client latency and (c) sustained
// frames/s against N, one line per system, one row of panels per payload.
// Points are medians; whiskers span min..max over the repeats.

const COLORS = {
  'js-helper': '#6b6b6b',
  'better-sse': '#d55e00',
  addon: '#0072b2',
  'addon-stream': '#56b4e9',
  limit: '#009e73',
};
const SPARE_COLORS = ['#cc79a7', '#e69f00', '#000000', '#f0e442'];

const PANEL_W = 420;
const PANEL_H = 250;
const MARGIN = { left: 70, right: 30, top: 40, bottom: 50 };
const HEADER = 70;

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function compact(v) {
  if (v >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toPrecision(3)}k`;
  return `${+v.toPrecision(3)}`;
}

/** Log axis over [lo, hi] padded out to whole decades; 2 and 5 ticks too when it spans few. */
function logScale(lo, hi, from, to) {
  const a = Math.floor(Math.log10(lo));
  const b = Math.max(a + 1, Math.ceil(Math.log10(hi)));
  const map = (v) => from + ((Math.log10(v) - a) / (b - a)) * (to - from);
  const steps = b - a <= 3 ? [1, 2, 5] : [1];
  const ticks = [];
  for (let e = a; e <= b; e++) for (const m of steps) if (m * 10 ** e <= 10 ** b) ticks.push(m * 10 ** e);
  return { map, ticks };
}

function panel({ x0, y0, title, unit, ns, series }) {
  const out = [];
  const left = x0 + MARGIN.left;
  const right = x0 + PANEL_W - MARGIN.right;
  const top = y0 + MARGIN.top;
  const bottom = y0 + PANEL_H - MARGIN.bottom;
  out.push(`<text x="${(left + right) / 2}" y="${y0 + 22}" class="title">${esc(title)}</text>`);
  out.push(`<rect x="${left}" y="${top}" width="${right - left}" height="${bottom - top}" class="frame"/>`);

  const values = series.flatMap((s) => s.points.flatMap((p) => [p.min, p.max])).filter((v) => v > 0);
  if (values.length === 0) {
    out.push(`<text x="${(left + right) / 2}" y="${(top + bottom) / 2}" class="note">no data</text>`);
    return out.join('\n');
  }
  const y = logScale(Math.min(...values), Math.max(...values), bottom, top);
  for (const t of y.ticks) {
    const py = y.map(t).toFixed(1);
    out.push(`<line x1="${left}" x2="${right}" y1="${py}" y2="${py}" class="grid"/>`);
    out.push(`<text x="${left - 6}" y="${py}" class="ytick">${compact(t)}</text>`);
  }
  out.push(
    `<text transform="translate(${x0 + 16} ${(top + bottom) / 2}) rotate(-90)" class="axis">${esc(unit)}</text>`,
  );
  // N on a log axis; with a single N the points sit in the middle.
  const xLo = Math.min(...ns);
  const xHi = Math.max(...ns);
  const xAt = (n) =>
    xLo === xHi
      ? (left + right) / 2
      : left + 30 + ((Math.log(n) - Math.log(xLo)) / (Math.log(xHi) - Math.log(xLo))) * (right - left - 60);
  for (const n of ns) {
    out.push(`<text x="${xAt(n).toFixed(1)}" y="${bottom + 18}" class="xtick">${n.toLocaleString('en-US')}</text>`);
  }
  out.push(`<text x="${(left + right) / 2}" y="${bottom + 38}" class="axis">clients (N)</text>`);

  series.forEach((s, i) => {
    // Systems side by side around each N, so equal values stay visible.
    const dodge = (i - (series.length - 1) / 2) * 5;
    const pts = s.points.filter((p) => p.median > 0);
    if (pts.length > 1) {
      const d = pts
        .map((p, j) => `${j ? 'L' : 'M'}${(xAt(p.n) + dodge).toFixed(1)},${y.map(p.median).toFixed(1)}`)
        .join(' ');
      out.push(`<path d="${d}" stroke="${s.color}" class="line${s.dashed ? ' dashed' : ''}"/>`);
    }
    for (const p of pts) {
      const px = (xAt(p.n) + dodge).toFixed(1);
      if (p.max > p.min && p.min > 0) {
        out.push(
          `<line x1="${px}" x2="${px}" y1="${y.map(p.min).toFixed(1)}" y2="${y.map(p.max).toFixed(1)}" stroke="${s.color}" class="whisker"/>`,
        );
      }
      out.push(`<circle cx="${px}" cy="${y.map(p.median).toFixed(1)}" r="3.5" fill="${s.color}"/>`);
    }
  });
  return out.join('\n');
}

/**
 * @param {{ rows: object[], ns: number[], payloads: {key: string, label: string}[], systems: string[], heading: string, limit: string }} input
 */
function renderChart({ rows, ns, payloads, systems, heading, limit }) {
  const width = 2 * PANEL_W + 20;
  const height = HEADER + payloads.length * PANEL_H + 10;
  const colorOf = new Map(systems.map((s, i) => [s, COLORS[s] ?? SPARE_COLORS[i % SPARE_COLORS.length]]));
  const body = [];
  payloads.forEach((payload, row) => {
    const seriesFor = (metric) =>
      systems.map((system) => ({
        color: colorOf.get(system),
        dashed: system === limit,
        points: ns
          .map((n) => {
            const r = rows.find((x) => x.system === system && x.n === n && x.payload === payload.key);
            return r?.[metric] ? { ...r[metric], n } : null;
          })
          .filter(Boolean),
      }));
    const y0 = HEADER + row * PANEL_H;
    body.push(
      panel({
        x0: 10,
        y0,
        title: `(b) broadcast → last client has it · ${payload.label}`,
        unit: 'ms (lower is better)',
        ns,
        series: seriesFor('latencyMs'),
      }),
      panel({
        x0: 10 + PANEL_W,
        y0,
        title: `(c) frames/s at max sustained rate · ${payload.label}`,
        unit: 'frames/s (higher is better)',
        ns,
        series: seriesFor('deliveredFps'),
      }),
    );
  });
  const legend = systems
    .map((s, i) => {
      const x = 20 + i * 140;
      const dash = s === limit ? ' stroke-dasharray="6 4"' : '';
      return `<line x1="${x}" x2="${x + 28}" y1="52" y2="52" stroke="${colorOf.get(s)}" stroke-width="2.5"${dash}/><circle cx="${x + 14}" cy="52" r="3.5" fill="${colorOf.get(s)}"/><text x="${x + 36}" y="56" class="legend">${esc(s)}</text>`;
    })
    .join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif">
<style>
  .title { font-size: 13px; font-weight: 600; text-anchor: middle; fill: #222; }
  .heading { font-size: 13px; fill: #333; }
  .axis { font-size: 11px; text-anchor: middle; fill: #444; }
  .xtick { font-size: 11px; text-anchor: middle; fill: #444; }
  .ytick { font-size: 11px; text-anchor: end; dominant-baseline: middle; fill: #444; }
  .legend { font-size: 12px; fill: #222; }
  .note { font-size: 12px; text-anchor: middle; fill: #888; }
  .frame { fill: none; stroke: #bbb; }
  .grid { stroke: #e4e4e4; }
  .line { fill: none; stroke-width: 2.5; }
  .dashed { stroke-dasharray: 6 4; }
  .whisker { stroke-width: 1.5; }
</style>
<rect width="100%" height="100%" fill="#fff"/>
<text x="20" y="26" class="heading">${esc(heading)}</text>
${legend}
${body.join('\n')}
</svg>
`;
}

module.exports = { renderChart };
