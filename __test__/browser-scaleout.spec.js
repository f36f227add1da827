'use strict';
// The demo as a new user runs it scaled out (README, "Scale-out"): two
// instances of `npm start` with REDIS_URL set, on two ports, one real
// Chromium page on each; a message sent on one page shows on both, and both
// pages count the clients of every instance. Skipped where no Chromium is
// installed; CI installs it and redis-server (.ci/run).

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { startRedis } = require('./redis-helpers.js');

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p));
const maybe = CHROMIUM ? test : test.skip;

const demos = [];
let browser;
let redis;

afterAll(async () => {
  await browser?.close();
  for (const demo of demos) demo.kill('SIGKILL');
  await redis?.stop();
});

/** `npm start`'s server with REDIS_URL; resolves with the URL it prints. */
function startDemo(url) {
  const demo = spawn(process.execPath, [path.join(__dirname, '..', 'demo', 'server.js')], {
    env: { ...process.env, PORT: '0', REDIS_URL: url, SSE_STREAM: 'demo-test' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  demos.push(demo);
  return new Promise((resolve, reject) => {
    demo.stdout.setEncoding('utf8');
    demo.stdout.on('data', (line) => {
      const match = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(line);
      if (match) resolve(match[1]);
    });
    demo.on('exit', (code) => reject(new Error(`demo exited with ${code}`)));
  });
}

const waitForMessage = (page, message) =>
  page.waitForFunction(
    (m) => [...document.querySelectorAll('#log li')].some((li) => li.textContent.includes(m)),
    message,
    { timeout: 10_000 },
  );

maybe('two demo instances on one Redis: a message sent on either page shows on both', async () => {
  const { chromium } = require('playwright-core');
  redis = await startRedis();
  const [urlA, urlB] = await Promise.all([startDemo(redis.url), startDemo(redis.url)]);
  expect(urlA).not.toBe(urlB);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
  const context = await browser.newContext();
  const a = await context.newPage();
  const b = await context.newPage();
  await a.goto(urlA);
  await b.goto(urlB);
  for (const [page, url] of [
    [a, urlA],
    [b, urlB],
  ]) {
    await page.waitForFunction(() => document.getElementById('state').textContent === 'open');
    // Each page shows its own instance, its bus connected, and the clients
    // of both instances (one page each).
    await page.waitForFunction(() => document.getElementById('bus').textContent === 'connected', null, {
      timeout: 10_000,
    });
    expect(`http://${await page.textContent('#instance')}/`).toBe(url);
    await page.waitForFunction(() => document.getElementById('global').textContent === '2', null, {
      timeout: 15_000,
    });
    expect(await page.textContent('#clients')).toBe('1');
  }

  await a.fill('input[name=text]', 'hello from instance A');
  await a.click('#send button');
  await waitForMessage(b, 'hello from instance A');
  await waitForMessage(a, 'hello from instance A');

  await b.fill('input[name=text]', 'and back from B');
  await b.click('#send button');
  await waitForMessage(a, 'and back from B');
  await waitForMessage(b, 'and back from B');

  // Both went through the stream: two entries, the only two (ticks stay local).
  const entries = await redis.command('XRANGE', 'demo-test', '-', '+');
  expect(entries.map(([, fields]) => JSON.parse(fields[fields.indexOf('data') + 1]).text)).toEqual([
    'hello from instance A',
    'and back from B',
  ]);
});
