// The documentation site (VitePress). `npm run docs:build` first generates the
// API reference from index.d.ts with TypeDoc (docs/api, git-ignored), then
// builds the static site into docs/.vitepress/dist. VitePress fails the build
// on a dead internal link; __test__/docs.spec.js opens every built page.

import fs from 'node:fs';
import { defineConfig } from 'vitepress';

/** TypeDoc's sidebar for the API reference, once `npm run docs:api` has run. */
function apiSidebar() {
  const file = new URL('../api/typedoc-sidebar.json', import.meta.url);
  if (!fs.existsSync(file)) return [];
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

export default defineConfig({
  title: 'sse-helper-native',
  description: 'Server-Sent Events for Express with a Rust core: a drop-in replacement for sseHelper.js',
  lang: 'en',
  // Nothing from a CDN or a font service: the built site works offline.
  head: [['link', { rel: 'icon', type: 'image/svg+xml', href: '/favicon.svg' }]],
  lastUpdated: false,
  themeConfig: {
    nav: [
      { text: 'Getting started', link: '/getting-started' },
      { text: 'Guides', link: '/guides/own-route' },
      { text: 'API', link: '/api/' },
      { text: 'Comparison', link: '/comparison' },
    ],
    sidebar: [
      {
        text: 'Introduction',
        items: [
          { text: 'Overview', link: '/' },
          { text: 'Getting started', link: '/getting-started' },
          { text: 'Migrating from sseHelper.js', link: '/migrating' },
        ],
      },
      {
        text: 'Guides',
        items: [
          { text: "Your app's own route", link: '/guides/own-route' },
          { text: 'Channels and replay', link: '/guides/channels-replay' },
          { text: 'Reverse proxies', link: '/guides/reverse-proxies' },
          { text: 'Process managers and rolling restarts', link: '/guides/process-managers' },
          { text: 'Testing your app', link: '/guides/testing' },
          { text: 'Scaling on Redis', link: '/guides/redis' },
          { text: 'Metrics and debugging', link: '/guides/metrics-debugging' },
          { text: 'Troubleshooting', link: '/guides/troubleshooting' },
        ],
      },
      { text: 'Comparison', items: [{ text: 'better-sse and the JS helper', link: '/comparison' }] },
      { text: 'API reference', link: '/api/', items: apiSidebar() },
    ],
    search: { provider: 'local' },
    outline: { level: [2, 3] },
  },
});
