// Turns the aggregated results into the markdown report, the JSON record and
// the SVG chart under bench/results/.

const fs = require('node:fs');
const path = require('node:path');
const { renderChart } = require('./chart.js');
const { median } = require('./stats.js');

const int = (v) => Math.round(v).toLocaleString('en-US');

/** Few significant digits: the spread between repeats makes more noise. */
function num(v) {
  if (v == null || !Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(2)} M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)} k`;
  if (a >= 100) return int(v);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

/** "median [min–max]" of a summary; just the median for a single run. */
function cell(s, { prefix = '' } = {}) {
  if (!s) return '–';
  const range = s.n > 1 && s.min !== s.max ? ` [${num(s.min)}–${num(s.max)}]` : '';
  return `${prefix}${num(s.median)}${range}`;
}

function ratio(v) {
  if (v == null || !Number.isFinite(v)) return '–';
  return `${v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(2) : v.toFixed(2)}×`;
}

function table(header, lines) {
  return [`| ${header.join(' | ')} |`, `|${header.map((_, i) => (i ? '---:' : ':---')).join('|')}|`]
    .concat(lines.map((l) => `| ${l.join(' | ')} |`))
    .join('\n');
}

function markdown({ machine, config, rows, memory, scaleOut, problems, warnings, foreignLoad, clockOk, durationS }) {
  const nList = config.ns.map((p) => p.n);
  const single = nList.length > 0;
  const out = [];
  out.push('# SSE broadcast benchmark');
  out.push('');
  out.push(
    `**Machine:** ${machine.cores} cores · ${machine.cpuModel} · Node ${machine.node} · ${machine.platform} · ` +
      `${machine.memoryGiB} GiB · ${machine.date.slice(0, 16).replace('T', ' ')} UTC`,
  );
  out.push('');
  if (single) {
    out.push(
      `**Run:** \`${config.mode}\` mode · N = ${nList.map(int).join(', ')} · payloads ${config.payloads.map((p) => p.label).join(', ')} · ` +
        `${config.repeats} repeats` +
        (config.modeRepeats != null && config.repeats !== config.modeRepeats
          ? ` (reduced by \`--repeats\` from the mode's ${config.modeRepeats} to keep the run short)`
          : '') +
        ` · ${config.shots} measured broadcasts per repeat for (a)/(b)` +
        (scaleOut ? ' · then the scale-out section' : '') +
        ` · ${durationS.toFixed(0)} s in all`,
    );
    out.push('');
    out.push(`**Connections:** ${config.fdNote}.`);
  } else if (scaleOut) {
    out.push(
      `**Run:** \`${config.mode}\` mode · the scale-out section only (\`--scaleout\`) · ${durationS.toFixed(0)} s in all`,
    );
  } else {
    // Every row asked for was skipped (the rows behind nginx, without nginx).
    out.push(`**Run:** \`${config.mode}\` mode · nothing ran (see below) · ${durationS.toFixed(0)} s in all`);
  }
  out.push('');
  if (config.note) {
    out.push(`**Note:** ${config.note}`);
    out.push('');
  }
  const a = config.addon;
  out.push(
    `**Addon build:** \`${a.binary}\` sha256 ${a.sha256}… at commit ${a.commit}` +
      (a.sourcesDirty ? ' (with uncommitted source changes)' : '') +
      '.',
  );
  if (foreignLoad) {
    out.push('');
    out.push(
      `**Other load on the machine** during the runs (busy CPU minus the benchmark's own processes): median ` +
        `${Math.max(0, foreignLoad.median).toFixed(2)}, max ${Math.max(0, foreignLoad.max).toFixed(2)} cores` +
        (foreignLoad.max > foreignLoad.warnAbove ? ' — see Warnings.' : '.'),
    );
  }
  if (single) {
    // The rows behind nginx have a section of their own (they compare with each other).
    out.push(
      ...singleServerSections({
        config,
        rows: rows.filter((r) => !r.via),
        memory: memory.filter((m) => !m.via),
        clockOk,
        nList,
      }),
    );
  }
  if (single || config.skipped?.length) out.push(...nginxSection({ config, rows, memory, nList }));
  if (scaleOut) out.push(...scaleOutSection(scaleOut, clockOk));

  if (warnings.length) {
    out.push('');
    out.push('## Warnings');
    out.push('');
    out.push(warnings.map((w) => `- ${w}`).join('\n'));
  }
  if (problems.length) {
    out.push('');
    out.push('## Problems');
    out.push('');
    out.push(problems.map((p) => `- ${p}`).join('\n'));
  }
  out.push('');
  return out.join('\n');
}

/** The tables and notes of the single-server figures (a)–(f). */
function singleServerSections({ config, rows, memory, clockOk, nList }) {
  const { baseline, limit } = config;
  const out = [];
  out.push('');
  out.push(
    `Each figure is the median over the repeats (each repeat: fresh server and client processes), ` +
      `with the range of the per-repeat values in brackets. Ratios divide medians: ` +
      `**×${baseline}** against the pure-JS baseline, **×${limit}** against the native floor. ` +
      'Lower is better for (a), (b), (d) and (e); higher is better for (c) and (f).',
  );

  for (const n of nList) {
    for (const payload of config.payloads) {
      const mine = rows.filter((r) => r.n === n && r.payload === payload.key);
      out.push('');
      out.push(`## N = ${int(n)} · ${payload.label} payload`);
      out.push('');
      out.push(
        table(
          [
            'system',
            '(a) loop blocked ms',
            '(a) sync part ms',
            '(b) last client ms',
            '(c) max bcast/s',
            '(c) frames/s',
            '(d) ELD p99 ms',
            '(d) ELD p99 @100/s ms',
            'RSS growth @100/s MB',
            '(f) bcast/s, ≤3 in flight',
            '(f) server / load gen. CPU',
          ],
          mine.map((r) => [
            // Repeats that saw a failure are left out; say so.
            r.runs < config.repeats ? `${r.system} (${r.runs}/${config.repeats} runs)` : r.system,
            cell(r.blockedMs),
            cell(r.syncMs),
            cell(r.latencyMs),
            `${cell(r.maxHz, { prefix: r.cappedHz ? '≥' : '' })}${loadgenBound(r) ? ' ‡' : ''}`,
            cell(r.deliveredFps),
            cell(r.eldP99Ms),
            cell(r.eldFastP99Ms),
            cell(mb(r.rssGrowthFastB)),
            cell(r.closedHz),
            r.closedServerCpu == null
              ? '–'
              : `${r.closedServerCpu.toFixed(2)} / ${r.closedLoadgenCpu?.toFixed(2) ?? '–'}`,
          ]),
        ),
      );
      out.push('');
      out.push(
        table(
          [
            'ratio of medians',
            `(a) ×${baseline}`,
            `(a) ×${limit}`,
            `(b) ×${baseline}`,
            `(b) ×${limit}`,
            `(c) ×${baseline}`,
            `(c) ×${limit}`,
            `(d) ×${baseline}`,
            `(d) @100/s ×${baseline}`,
            `(f) ×${baseline}`,
            `(f) ×${limit}`,
          ],
          mine.map((r) => [
            r.system,
            ratio(r.ratios[baseline].blockedMs),
            ratio(r.ratios[limit].blockedMs),
            ratio(r.ratios[baseline].latencyMs),
            ratio(r.ratios[limit].latencyMs),
            ratio(r.ratios[baseline].maxHz),
            ratio(r.ratios[limit].maxHz),
            ratio(r.ratios[baseline].eldP99Ms),
            ratio(r.ratios[baseline].eldFastP99Ms),
            ratio(r.ratios[baseline].closedHz),
            ratio(r.ratios[limit].closedHz),
          ]),
        ),
      );
    }
  }

  out.push('');
  out.push('## (e) Server memory per connection');
  out.push('');
  out.push(
    table(
      ['system', 'N', 'RSS per conn (KB)', 'JS heap per conn (KB)', `RSS ×${baseline}`, 'fds per conn', 'transport'],
      memory.map((m) => [
        m.system,
        int(m.n),
        cell(kb(m.rssPerConnB)),
        cell(kb(m.heapPerConnB)),
        ratio(m.ratios[baseline]),
        m.fdsPerConn == null ? '–' : m.fdsPerConn.toFixed(2),
        transportLabel(m.transports),
      ]),
    ),
  );

  out.push('');
  out.push('## What is measured');
  out.push('');
  out.push(
    [
      `- Every system serves GET /events on 127.0.0.1 from its own process (Express 5 for the Node systems); ` +
        'the clients are raw TCP sockets in one separate load-generator process that decodes chunked HTTP/1.1 and ' +
        'counts an event when a blank line ends a block holding a `data` field.',
      `- **(a)** Time one broadcast keeps the server's event loop: from the call until a \`setImmediate\` queued ` +
        'right after it runs, so it includes the socket writes Node defers to the end of the turn. "sync part" is ' +
        `the call alone. For ${limit}, the time of its write loop. Each measured broadcast follows ` +
        `${config.idleBeforeShotMs} ms of silence, so it meets idle connections (see README: Linux ACKs every ` +
        'segment on a connection that was idle for longer than its retransmission timeout, which costs ' +
        'measurably, and a steady state could not be held equal for fast and slow systems).',
      '- **(b)** From just before the broadcast call to the moment the load generator has parsed the frame on the ' +
        'last of the N sockets. Both ends read CLOCK_MONOTONIC (`process.hrtime.bigint()`, `clock_gettime` in the ' +
        'native program), one clock for every process on the machine; each run checks that a child’s reading falls ' +
        `between two of the harness's${clockOk ? ' (it did, every time)' : ' (THAT CHECK FAILED in some run)'}.`,
      `- **(c)** Offered broadcast rates on a ×${config.grid.ratio} grid (up to ${int(config.grid.maxHz)}/s; "≥" when ` +
        `no rate above it failed: the top of the grid, or the search ran out of steps while passing), about ${config.stepMs} ms each, the first third of it warm-up; a rate is sustained ` +
        `when the server kept ≥ ${config.keepUp * 100} % of the schedule, the step's last broadcast reached all ` +
        'clients no later after it was due than the broadcast ending the warm-up did, and the warm-up added at ' +
        `most one (b) to the first broadcast's lag; each within ${Math.round((1 - config.keepUp) * 100)} % of the ` +
        `span plus half of (b) (at least ${config.lagSlackMs} ms) for jitter. A growing backlog fails this, as ` +
        'does delivering in one heap at the end; a constant delay ' +
        'does not. A step that kept the schedule but failed on lag is run once more; the rate fails only if that ' +
        'fails too. Shown: the highest ' +
        'sustained rate and the frames/s delivered at it (N × broadcasts over the time between the first and the ' +
        'last broadcast reaching every client). ‡: at the next rate up the load generator used ≥ 90 % of a core, ' +
        'so what failed there may be the client side rather than the server.',
      `- **(d)** p99 of \`monitorEventLoopDelay({ resolution: 2 })\` while broadcasting 10 times a second for ` +
        `${config.eldMs / 1000} s. The histogram records whole timer intervals, so an idle loop reads ≈ 2.2 ms. ` +
        `The same again at 100 broadcasts a second ("@100/s"; a system that cannot keep up simply shows a ` +
        "large delay), with the server's RSS after a forced GC taken just before that phase and just after it, " +
        'frames still queued for the clients included ("RSS growth": after minus before). ' +
        `Not applicable to ${limit} (no event loop).`,
      '- **(e)** Server RSS and JS heap (after a forced GC) once N clients are registered, minus the same before ' +
        'the first client connected, divided by N. Kernel socket buffers are not in RSS. "fds per conn" counts ' +
        'the server\'s open descriptors the same way; "transport" is what the addon\'s getStats() says its ' +
        'connections were handed to (socket: its native writer thread; stream: res.write on the JS thread).',
      `- **(f)** Throughput at bounded lag, closed loop: at most ${config.closedInFlight ?? 3} broadcasts ` +
        'outstanding, the next one issued as soon as the oldest has reached every client, for about ' +
        `${(config.closedMs ?? 2000) / 1000} s; broadcasts over the time from the first call to the last ` +
        'broadcast reaching every client, as the harness learns it (its round trips included, the same for every ' +
        'system). What a latency-bound app sees; a system that only batches well once it falls behind gets no ' +
        'credit for it. "CPU" is the cores the server and the load generator used meanwhile: both share this ' +
        "machine's cores, so a load generator near 1.0 means the client side may be the limit.",
    ].join('\n'),
  );
  return out;
}

/**
 * The rows behind nginx: one table per N and payload, ratios against the JS
 * helper behind the same nginx and against each system without nginx (both
 * from the same run), and what each connection got.
 */
function nginxSection({ config, rows, memory, nList }) {
  const out = [];
  const proxied = rows.filter((r) => r.via === 'nginx');
  const skipped = config.skipped ?? [];
  if (proxied.length === 0 && skipped.length === 0) return out;
  out.push('');
  out.push('## Behind nginx');
  out.push('');
  if (proxied.length === 0) {
    out.push(`Not run: ${skipped.map((x) => `\`${x.system}\``).join(', ')} skipped, ${skipped[0].reason}.`);
    return out;
  }
  const peer = config.nginxBaseline;
  const ngx = config.nginx;
  const repeats = config.nginxRepeats ?? config.repeats;
  out.push(
    `The clients connect to a real nginx (${ngx.version ?? 'version unknown'}, \`${ngx.binary}\`) that the harness ` +
      'starts in front of the server for every repeat, with the configuration of `__test__/nginx.js`: ' +
      `${ngx.setup}. Every system here sends \`X-Accel-Buffering: no\`, which turns that buffering off for its ` +
      'responses. Each figure is taken as in the tables above, the clients on the far side of nginx; nginx, the ' +
      "server and the load generator share the machine's cores. " +
      (repeats < config.repeats ? `These rows ran ${repeats} of the ${config.repeats} repeats. ` : '') +
      'Ratios divide medians from this run: ' +
      `**×${peer}** against the JS helper behind the same nginx, **×direct** against the same system without ` +
      'nginx.',
  );
  for (const n of nList) {
    for (const payload of config.payloads) {
      const mine = proxied.filter((r) => r.n === n && r.payload === payload.key);
      if (mine.length === 0) continue;
      out.push('');
      out.push(`### Behind nginx: N = ${int(n)} · ${payload.label} payload`);
      out.push('');
      out.push(
        table(
          [
            'system',
            '(a) loop blocked ms',
            '(b) last client ms',
            '(c) max bcast/s',
            '(c) frames/s',
            '(d) ELD p99 ms',
            '(d) ELD p99 @100/s ms',
            '(f) bcast/s, ≤3 in flight',
            '(f) server / nginx / load gen. CPU',
            'nginx CPU at the first failing (c) rate',
          ],
          mine.map((r) => [
            r.runs < repeats ? `${r.system} (${r.runs}/${repeats} runs)` : r.system,
            cell(r.blockedMs),
            cell(r.latencyMs),
            `${cell(r.maxHz, { prefix: r.cappedHz ? '≥' : '' })}${loadgenBound(r) ? ' ‡' : ''}`,
            cell(r.deliveredFps),
            cell(r.eldP99Ms),
            cell(r.eldFastP99Ms),
            cell(r.closedHz),
            r.closedServerCpu == null
              ? '–'
              : [r.closedServerCpu, r.closedNginxCpu, r.closedLoadgenCpu]
                  .map((v) => (v == null ? '–' : v.toFixed(2)))
                  .join(' / '),
            r.nginxCpuAbove == null ? '–' : r.nginxCpuAbove.toFixed(2),
          ]),
        ),
      );
      out.push('');
      const rt = (r, key, m) => ratio(r.ratios[key]?.[m]);
      out.push(
        table(
          [
            'ratio of medians',
            `(a) ×${peer}`,
            `(b) ×${peer}`,
            `(c) ×${peer}`,
            `(d) ×${peer}`,
            `(f) ×${peer}`,
            '(a) ×direct',
            '(b) ×direct',
            '(c) ×direct',
            '(f) ×direct',
          ],
          mine.map((r) => [
            r.system,
            rt(r, peer, 'blockedMs'),
            rt(r, peer, 'latencyMs'),
            rt(r, peer, 'maxHz'),
            rt(r, peer, 'eldP99Ms'),
            rt(r, peer, 'closedHz'),
            rt(r, 'direct', 'blockedMs'),
            rt(r, 'direct', 'latencyMs'),
            rt(r, 'direct', 'maxHz'),
            rt(r, 'direct', 'closedHz'),
          ]),
        ),
      );
    }
  }
  out.push('');
  out.push('### Behind nginx: the connections');
  out.push('');
  const versions = (v) =>
    v
      ? Object.entries(v)
          .map(([version, count]) => `HTTP/${version} × ${int(count)}`)
          .join(', ')
      : '–';
  out.push(
    table(
      ['system', 'N', 'requests the server saw', 'transport', 'RSS per conn (KB)', `RSS ×${peer}`, 'fds per conn'],
      memory
        .filter((m) => m.via === 'nginx')
        .map((m) => [
          m.system,
          int(m.n),
          versions(m.httpVersions),
          transportLabel(m.transports),
          cell(kb(m.rssPerConnB)),
          ratio(m.ratios[peer]),
          m.fdsPerConn == null ? '–' : m.fdsPerConn.toFixed(2),
        ]),
    ),
  );
  out.push('');
  out.push(
    [
      '- **Requests the server saw**: the HTTP version of every request on /events, as Express reported it: ' +
        "nginx's default `proxy_pass` speaks HTTP/1.0 to the upstream, so the response body is close-delimited " +
        '(no chunked encoding). The run fails if any other version shows up.',
      "- **Transport**: what the package's `getStats()` says its connections were handed to, once all N were " +
        'registered (socket: its native writer thread, which frames the close-delimited body itself; stream: ' +
        '`res.write` on the JS thread). The run fails if a connection of the package behind nginx is not on the ' +
        'native writer. The JS helper and better-sse report none.',
      '- **nginx CPU**: the scheduler run time of the nginx process (`/proc/<pid>/task/*/schedstat`) over the ' +
        'closed loop (f), and over the first (c) step that failed, as a share of one core. It counts as the ' +
        "benchmark's own load in the foreign-load check, like the server and the load generator.",
      "- RSS and fds are the server's, as in (e); nginx's memory is not in them.",
    ].join('\n'),
  );
  if (skipped.length) {
    out.push('');
    out.push(`Skipped: ${skipped.map((x) => `\`${x.system}\``).join(', ')}: ${skipped[0].reason}.`);
  }
  return out;
}

/** "met" / "NOT met" / "not measured". */
function verdict(met) {
  if (met == null) return 'not measured';
  return met ? 'met' : '**NOT met**';
}

/** The scale-out section: one table, the goals, how it is measured. */
function scaleOutSection({ config, rows, goals }, clockOk) {
  const out = [];
  const n = config.n;
  const half = config.perInstance;
  out.push('');
  out.push(`## Scale-out: N = ${int(n)} on one instance vs. 2 × ${int(half)} on one Redis · ${config.payload} payload`);
  out.push('');
  out.push(
    `${config.repeats} repeat${config.repeats === 1 ? '' : 's'}; each a fresh redis-server (no persistence, on ` +
      'loopback), fresh instance processes and a fresh load-generator process. Broadcasts are made on instance A; ' +
      'B is the other instance. Median over the repeats, min–max in brackets.' +
      (config.nNote ? ` N: ${config.nNote}.` : ''),
  );
  out.push('');
  const label = (r) => {
    const base = `${r.system} (${r.instances === 1 ? `1 × ${int(r.perInstance)}` : `2 × ${int(r.perInstance)}`})`;
    return r.runs < config.repeats ? `${base} (${r.runs}/${config.repeats} runs)` : base;
  };
  const cpu = (c) => [c.A, c.B, c.loadgen, c.redis].map((v) => (v == null ? '–' : v.toFixed(2))).join(' / ');
  const cpuAbove = (c) =>
    c && [c.A, c.loadgen].some((v) => v != null)
      ? [c.A, c.B, c.loadgen].map((v) => (v == null ? '–' : v.toFixed(2))).join(' / ')
      : '–';
  // Older results files have no (c) in this section.
  const hasProbe = rows.some((r) => r.maxHz);
  out.push(
    table(
      [
        'system (instances × clients)',
        ...(hasProbe
          ? [
              '(c) sustained bcast/s to every client',
              '(c) frames/s',
              'CPU at the first failing (c) rate, cores: A / B / load gen.',
            ]
          : []),
        `(f) bcast/s to every client, ≤${config.inFlight} in flight`,
        'p50 to last client on B ms',
        'p99 to last client on B ms',
        'loop ms per remote bcast, on B',
        'loop ms per bcast, on origin A',
        'CPU ms per remote bcast, B process',
        'Redis CPU ms per bcast: spaced / sustained',
        'CPU during (f), cores: A / B / load gen. / Redis',
      ],
      rows.map((r) => {
        const one = r.instances === 1;
        return [
          label(r),
          ...(hasProbe
            ? [
                `${cell(r.maxHz, { prefix: r.cappedHz ? '≥' : '' })}${loadgenBound(r.cpuAbove?.loadgen) ? ' §' : ''}`,
                cell(r.deliveredFps),
                cpuAbove(r.cpuAbove),
              ]
            : []),
          cell(r.closedHz),
          `${cell(r.p50Ms)}${one ? ' †' : ''}`,
          `${cell(r.p99Ms)}${one ? ' †' : ''}`,
          one ? '– (no B)' : cell(r.remoteLoopMs),
          `${cell(r.originLoopMs)}${one ? ' ‡' : ''}`,
          one ? '–' : cell(r.remoteCpuMs),
          one ? '– (no Redis)' : `${cell(r.redisCpuMs)} / ${cell(r.redisCpuClosedMs)}`,
          cpu(r.closedCpu),
        ];
      }),
    ),
  );
  out.push('');
  const idleBusy = median(rows.map((r) => r.idleLoopBusy));
  out.push(
    '† one instance: to the last of its N clients (its single-instance delivery time). ' +
      '‡ one instance: the per-broadcast loop time of the instance that makes the call (there is no other instance). ' +
      (rows.some((r) => loadgenBound(r.cpuAbove?.loadgen))
        ? '§ at the next (c) rate up the load generator used ≥ 90 % of a core, so what failed there may be the ' +
          'client side. '
        : '') +
      (rows.some((r) => r.cappedHz) ? '"≥" in (c): no rate above it failed, the limit is higher. ' : '') +
      'Loop times are gross (all the loop did during the series, per broadcast)' +
      (idleBusy == null
        ? '.'
        : `; with nothing sent the loops were busy ${(idleBusy * 100).toFixed(3)} % of the time (median), ` +
          'which is in them too.'),
  );
  out.push('');
  out.push(
    goals.atGoalN
      ? `### Goals (N = 2 × ${int(config.goalN / 2)}, ${config.payload})`
      : `### Goals (set for N = 2 × ${int(config.goalN / 2)}; this run is N = ${int(n)}, shown for information only)`,
  );
  out.push('');
  const g = goals;
  out.push(
    table(
      ['goal', 'measured', 'target', 'verdict'],
      [
        [
          g.remoteLoop.text,
          `${num(g.remoteLoop.measured)} ms`,
          `≤ ${num(g.remoteLoop.limit)} ms`,
          verdict(g.remoteLoop.met),
        ],
        [
          g.rate.text,
          g.rate.measured == null
            ? '–'
            : g.rate.bound === '?'
              ? `${ratio(g.rate.measured)} (both rates "≥")`
              : `${g.rate.bound ?? ''}${ratio(g.rate.measured)}`,
          `≥ ${g.rate.limit}×`,
          g.rate.met == null && g.rate.measured != null ? 'undetermined (a bound)' : verdict(g.rate.met),
        ],
        [
          g.latency.text,
          `${num(g.latency.measured)} ms`,
          g.latency.limit == null ? '–' : `≤ ${num(g.latency.limit)} ms`,
          verdict(g.latency.met),
        ],
      ],
    ),
  );
  const single = rows.find((r) => r.instances === 1);
  const js = rows.find((r) => r.system === 'helper-ioredis');
  if (hasProbe && g.rate.closedRatio != null) {
    out.push('');
    out.push(
      `The rate goal is judged on (c), the sustained rate the issue asks for. The closed loop (f) is in the ` +
        `table too: there addon-bus reaches ${ratio(g.rate.closedRatio)} helper-ioredis's rate. (f) keeps at ` +
        `most ${config.inFlight} broadcasts outstanding, so it gives no credit to a writer that batches frames ` +
        'once it is behind; (c) does, as long as every client still gets every frame with a bounded lag.',
    );
  }
  if (single?.closedHz && js?.closedHz) {
    const c = hasProbe && single.maxHz && js.maxHz ? single.maxHz.median / js.maxHz.median : null;
    out.push('');
    out.push(
      `For scale: on this machine the single instance with all N clients reaches ` +
        (c == null
          ? `${ratio(single.closedHz.median / js.closedHz.median)} helper-ioredis's closed-loop rate (f)`
          : `${ratio(c)} helper-ioredis's sustained rate (c) and ` +
            `${ratio(single.closedHz.median / js.closedHz.median)} its closed-loop rate (f)`) +
        '; the writes to ' +
        'the N sockets and the load generator reading them share the same cores in every row.',
    );
  }
  out.push('');
  out.push('### How the scale-out figures are taken');
  out.push('');
  out.push(
    [
      `- **Rows.** \`addon\`: this package, one instance holding all N clients, no Redis (the reference). ` +
        '`addon-bus`: this package on its Redis bus (`configure({ redis: { url, stream } })`, `await hub.ready()`), ' +
        'two instances with N/2 clients each: a broadcast on A is appended to a Redis stream, and both instances read ' +
        'it back and deliver it. `helper-ioredis`: the JS helper plus ioredis pub/sub, two instances: a broadcast ' +
        "on A is PUBLISHed, and each instance's subscriber re-broadcasts it to its clients with the helper.",
      '- **Processes.** Every instance is its own server process (Express 5), the N clients live in one ' +
        'load-generator process (its sockets grouped by instance), and the harness starts its own redis-server for ' +
        'each repeat and stops it afterwards. Everything shares this machine: with two cores, the instances, the ' +
        'load generator and Redis compete for the same CPUs, so a second instance adds no hardware here; it can only ' +
        "show what the fan-out through Redis costs and whom it blocks. The instances run with V8's memory " +
        'reducer off (`--no-memory-reducer`; see bench/README.md): it runs full GCs in any process that goes ' +
        'quiet, broadcasts or not, and would land in some repeats and not others.',
      ...(hasProbe
        ? [
            `- **(c) sustained rate.** The main section's probe (figure (c), lib/probe.js), with A as the server: ` +
              `A broadcasts at offered rates on its own timer-driven schedule (the \`run\` command), on a ` +
              `×${config.grid.ratio} grid, about ${config.stepMs} ms per step (at least 5 broadcasts), the first ` +
              'third warm-up. The load generator times three broadcasts per step (the first, the one ending the ' +
              'warm-up and the last) on the last client of every instance, A and B together. A rate is sustained ' +
              `when A kept ≥ ${config.keepUp * 100} % of the schedule, every client of both instances got the ` +
              "step's frames, the last broadcast's lag (from when it was due) grew no more than " +
              `${Math.round((1 - config.keepUp) * 100)} % of the span plus jitter since the warm-up, and the ` +
              'warm-up added at most one delivery time; delivery time and jitter come from the latency series ' +
              `(its p50 to the last client of every instance; jitter half of it, at least ${config.lagSlackMs} ms). ` +
              'A step that kept the schedule but failed on lag is run once more. The search starts at half the ' +
              "rate the series suggests (A's blocked time or that delivery time, whichever is longer), grows while " +
              `steps pass (up to ×1.56 per step), then bisects; up to ${config.maxSteps} rates in a row's first ` +
              `repeat, ${config.maxStepsResumed} from the previous repeat's answer in later ones. Shown: the ` +
              'highest sustained rate and the frames/s delivered at it (N × broadcasts over the time between the ' +
              'first and the last broadcast reaching every client), and the CPU A, B and the load generator used ' +
              'at the first rate that failed.',
          ]
        : []),
      `- **(f) closed loop.** As figure (f) above: at most ${config.inFlight} broadcasts (made on A) outstanding; ` +
        'the next is issued once the oldest has reached every client of every instance; for about ' +
        `${config.closedMs / 1000} s. Broadcasts over the time from the first call to the last broadcast reaching ` +
        'every client.',
      `- **Latency.** ${config.seriesCount} broadcasts on A, each issued once the previous one has reached every ` +
        `client of every instance and ${config.gapMs} ms have passed (so connections never sit idle for the ` +
        '200 ms that makes Linux ACK every segment). From just before the call on A to the moment the load generator ' +
        'has parsed the frame on the last client of B (with one instance: the last of its N clients). Nearest-rank ' +
        'p50 and p99 per repeat.',
      '- **Loop ms per remote broadcast, on B.** Taken inside B: `performance.eventLoopUtilization()` active time ' +
        'over the whole latency series, divided by the number of broadcasts. B receives no harness command during ' +
        "the series. It includes all of B's JavaScript for a remote broadcast (for `helper-ioredis`: reading the " +
        'message, JSON.parse, the write to each client), whatever else the loop ran meanwhile (timers: an upper ' +
        "bound), and time B's thread waited for a core while busy. The JSON also keeps it net of the idle rate " +
        `(measured over ${config.idleMs / 1000} s with nothing sent just before).`,
      "- **Loop ms per broadcast, on origin A.** The same inside A, minus the harness's own command " +
        '(each broadcast is one `bcast` line on stdin; the cost of one command is measured beforehand from ' +
        `${Math.min(config.commandProbe, config.seriesCount)} \`clock\` commands at the series' pace: a loop ` +
        'woken from idle takes several times longer over the same work than one kept busy). For the two-instance ' +
        'rows it includes A delivering to its own clients when ' +
        'the entry or message comes back from Redis.',
      '- **CPU ms per remote broadcast, B process.** `process.cpuUsage()` of B over the series, net of its idle ' +
        'rate (same window), per broadcast: every thread of B (for the addon: its bus thread and socket writers too).',
      '- **Redis CPU.** `used_cpu_sys + used_cpu_user` from `INFO cpu`, the difference over the series ("spaced") ' +
        'and over the closed loop ("sustained"), minus its idle rate, per broadcast.',
      `- **Delivery.** After the last figure, every client of every instance must hold every frame exactly once; ` +
        "B must have made no broadcast; the addon's bus must have delivered nothing locally for lack of Redis; " +
        `ioredis must have received every message on both instances. Otherwise the repeat is left out and listed ` +
        `under Problems (the run fails). Clocks: one CLOCK_MONOTONIC for every process` +
        `${clockOk ? ' (checked every repeat)' : ' (THAT CHECK FAILED in some run)'}.`,
    ].join('\n'),
  );
  return out;
}

/** e.g. "socket 1,000" or "stream 600 + socket 400", from the addon's getStats(). */
function transportLabel(t) {
  if (!t) return '–';
  const parts = [];
  if (t.socket) parts.push(`socket ${int(t.socket)}`);
  if (t.stream) parts.push(`stream ${int(t.stream)}`);
  return parts.join(' + ') || '–';
}

function mb(s) {
  return s && { ...s, median: s.median / 2 ** 20, min: s.min / 2 ** 20, max: s.max / 2 ** 20 };
}

function kb(s) {
  return s && { ...s, median: s.median / 1024, min: s.min / 1024, max: s.max / 1024 };
}

/** The next offered rate up failed while the load generator was saturated (a row, or its CPU share there). */
function loadgenBound(row) {
  const cpu = typeof row === 'number' || row == null ? row : row.loadgenCpuAbove;
  return cpu != null && cpu >= 0.9;
}

/** Writes <base>.md, <base>.json and <base>.svg into `dir`. */
function writeReport(input) {
  const { dir, base, machine, config } = input;
  fs.mkdirSync(dir, { recursive: true });
  const md = markdown(input);
  // The chart is of the single-server figures; a scale-out-only run has none.
  const chart = input.rows.length > 0;
  // The rows behind nginx are not on the chart (its lines compare systems on one footing).
  const proxied = new Set(input.rows.filter((r) => r.via).map((r) => r.system));
  const svg =
    chart &&
    renderChart({
      rows: input.rows,
      ns: config.ns.map((p) => p.n),
      payloads: config.payloads,
      systems: config.systems.filter((name) => !proxied.has(name)),
      limit: config.limit,
      heading: `${machine.cores} cores · ${machine.cpuModel} · Node ${machine.node} · ${machine.date.slice(0, 10)} · medians of ${config.repeats} repeats, whiskers min–max`,
    });
  const json = {
    machine,
    config,
    rows: input.rows,
    memory: input.memory,
    problems: input.problems,
    warnings: input.warnings,
    foreignLoad: input.foreignLoad,
    clockOk: input.clockOk,
    durationS: input.durationS,
    cells: input.cells,
    scaleOut: input.scaleOut ?? null,
  };
  const files = [
    [`${base}.md`, chart ? `${md.trimEnd()}\n\n![${base} chart](${base}.svg)\n` : `${md.trimEnd()}\n`],
    [`${base}.json`, `${JSON.stringify(json, null, 2)}\n`],
  ];
  if (chart) files.push([`${base}.svg`, svg]);
  for (const [name, content] of files) fs.writeFileSync(path.join(dir, name), content);
  return { markdown: md, files: files.map(([name]) => path.join(path.relative(process.cwd(), dir), name)) };
}

module.exports = { writeReport };
