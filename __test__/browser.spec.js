'use strict';
// The demo page in a real browser: headless Chromium (Debian's package,
// driven by playwright-core) opens the page, whose EventSource must show the
// server's clock ticking. Skipped where no Chromium is installed; CI
// installs it (.ci/run).

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
const maybe = CHROMIUM ? test : test.skip;

let demo;
let browser;

afterAll(async () => {
  await browser?.close();
  demo?.kill('SIGTERM');
});

maybe(
  'the demo page shows the UTC clock streamed over EventSource',
  async () => {
    const { chromium } = require('playwright-core');
    demo = spawn(process.execPath, [path.join(__dirname, '..', 'demo', 'server.js')], {
      env: { ...process.env, PORT: '0' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const url = await new Promise((resolve, reject) => {
      demo.stdout.setEncoding('utf8');
      demo.stdout.on('data', (line) => {
        const match = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(line);
        if (match) resolve(match[1]);
      });
      demo.on('exit', (code) => reject(new Error(`demo exited with ${code}`)));
    });
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
    const page = await browser.newPage();
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('state').textContent === 'open');
    // The greeting, then at least two ticks of the clock.
    await page.waitForFunction(() => Number(document.getElementById('count').textContent) >= 3, null, {
      timeout: 10_000,
    });
    const clock = await page.textContent('#clock');
    expect(clock).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$/);
    const shown = Date.parse(`${clock.replace(' ', 'T')}Z`);
    expect(Math.abs(Date.now() - shown)).toBeLessThan(60_000);
    expect(await page.textContent('#clients')).toBe('1');
  },
  60_000,
);
