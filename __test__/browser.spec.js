'use strict';
// The demo dashboard in a real browser: headless Chromium (Debian's package,
// driven by playwright-core) opens two tabs on the demo server. The clock
// ticks, the hub's figures change, a message typed in one tab appears in the
// other, a message sent while a tab was away is replayed when it comes
// back, and a screenshot is saved as a PNG. Skipped where no Chromium is
// installed; CI installs it (.ci/run).

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
const maybe = CHROMIUM ? test : test.skip;
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

let demo;
let browser;
let tmp;

afterAll(async () => {
  await browser?.close();
  demo?.kill('SIGTERM');
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** Starts demo/server.js on a free port; resolves with the URL it prints. */
function startDemo() {
  demo = spawn(process.execPath, [path.join(__dirname, '..', 'demo', 'server.js')], {
    env: { ...process.env, PORT: '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    demo.stdout.setEncoding('utf8');
    demo.stdout.on('data', (line) => {
      const match = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(line);
      if (match) resolve(match[1]);
    });
    demo.on('exit', (code) => reject(new Error(`demo exited with ${code}`)));
  });
}

const text = (page, selector) => page.textContent(selector);
const number = async (page, selector) => Number(await text(page, selector));

/** The texts of a page's message log, newest first. */
const log = (page) => page.$$eval('#log li', (items) => items.map((li) => li.textContent));

/** Waits until the page's log has a line containing `message`. */
const waitForMessage = (page, message) =>
  page.waitForFunction(
    (m) => [...document.querySelectorAll('#log li')].some((li) => li.textContent.includes(m)),
    message,
    {
      timeout: 10_000,
    },
  );

async function send(page, message) {
  await page.fill('input[name=text]', message);
  await page.click('#send button');
}

maybe(
  'the dashboard: clock and figures tick, two tabs see each other, a reload replays what it missed, a screenshot',
  async () => {
    const { chromium } = require('playwright-core');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-demo-'));
    const url = await startDemo();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    // One browser context: two tabs of one browser, as a person would open them.
    const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    const a = await context.newPage();
    const b = await context.newPage();
    await a.goto(url);
    await b.goto(url);
    for (const page of [a, b]) {
      await page.waitForFunction(() => document.getElementById('state').textContent === 'open');
      await page.waitForFunction(() => document.getElementById('clients').textContent === '2', null, {
        timeout: 10_000,
      });
    }

    // The clock is the server's UTC time.
    const clock = await text(a, '#clock');
    expect(clock).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$/);
    expect(Math.abs(Date.now() - Date.parse(`${clock.replace(' ', 'T')}Z`))).toBeLessThan(60_000);
    // Both tabs are plain HTTP/1.1 on loopback: the native writer has them.
    expect(await text(a, '#transports')).toBe('2 / 0');

    // A message typed in one tab appears in the other, and in its own.
    await send(a, 'hello from tab A');
    await waitForMessage(b, 'hello from tab A');
    await waitForMessage(a, 'hello from tab A');
    expect((await log(a))[0]).toContain('you');

    // The figures change: frames go out every second, so frames/s becomes
    // positive and the chart has a line.
    await a.waitForFunction(() => Number(document.getElementById('fps').textContent) > 0, null, { timeout: 10_000 });
    await a.waitForFunction(() => document.getElementById('fps-line').getAttribute('points')?.split(' ').length >= 2);
    const replaysBefore = await number(a, '#replays');

    // A channel: B joins 'ops'; A's broadcast reaches both, B's publish to
    // 'ops' reaches B only (A never joined).
    await b.fill('input[name=channel]', 'ops');
    await b.click('#join button');
    await b.waitForFunction(() => document.getElementById('channels').textContent === '#ops');
    await b.selectOption('select[name=to]', 'ops');
    await send(b, 'only for ops');
    await waitForMessage(b, 'only for ops');

    // B goes away; A sends; B comes back (the same tab, so its
    // sessionStorage still has the last id it saw) and gets it replayed.
    await b.goto('about:blank');
    await a.waitForFunction(() => document.getElementById('clients').textContent === '1', null, { timeout: 10_000 });
    await send(a, 'sent while B was away');
    await waitForMessage(a, 'sent while B was away');
    await b.goto(url);
    await waitForMessage(b, 'sent while B was away');
    const missed = (await log(b)).find((line) => line.includes('sent while B was away'));
    expect(missed).toContain('missed while away');
    // The hub counted the replay, and the figures show it.
    await a.waitForFunction((n) => Number(document.getElementById('replays').textContent) > n, replaysBefore, {
      timeout: 10_000,
    });
    // B rejoined 'ops' by itself after the reload; A never saw the ops message.
    await b.waitForFunction(() => document.getElementById('channels').textContent === '#ops');
    expect((await log(a)).some((line) => line.includes('only for ops'))).toBe(false);

    await a.waitForFunction(() => document.getElementById('clients').textContent === '2', null, { timeout: 10_000 });
    const shot = path.join(tmp, 'dashboard.png');
    await a.screenshot({ path: shot, fullPage: true });
    const png = fs.readFileSync(shot);
    expect(png.length).toBeGreaterThan(10_000);
    expect(png.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
    if (process.env.SSE_DEMO_SCREENSHOT) fs.copyFileSync(shot, process.env.SSE_DEMO_SCREENSHOT);
  },
  90_000,
);
