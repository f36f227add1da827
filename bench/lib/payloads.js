// The two payloads: JSON shaped like real SSE traffic (a small status event
// and a snapshot of many small records, not one long string, since the cost
// of JSON.stringify depends on shape), padded to exactly the target size.

function pad(make, bytes) {
  const base = JSON.stringify(make(''));
  if (base.length > bytes) throw new Error(`payload skeleton is already ${base.length} B > ${bytes} B`);
  return make('x'.repeat(bytes - base.length));
}

const PAYLOADS = {
  small: {
    label: '100 B',
    make: () =>
      pad((note) => ({ type: 'status', seq: 4217, utc: '2025-01-01T12:00:00.000Z', load: 0.42, ok: true, note }), 100),
  },
  large: {
    label: '4 KB',
    make: () =>
      pad((note) => {
        const rows = [];
        for (let i = 0; i < 48; i++) {
          rows.push({ id: 1000 + i, name: `sensor-${i}`, value: Math.round(Math.sin(i) * 1e4) / 100, ok: i % 7 !== 0 });
        }
        return { type: 'snapshot', seq: 4217, utc: '2025-01-01T12:00:00.000Z', rows, note };
      }, 4096),
  },
};

module.exports = { PAYLOADS };
