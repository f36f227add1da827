// A real nginx (Debian's) on a free loopback port, in front of an upstream,
// with its default proxy settings unless a test adds its own: `proxy_pass`
// speaks HTTP/1.0 to the upstream with `Connection: close`. Its files live
// in a temporary prefix; stop() ends it and removes them.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { freePort } = require('./redis-helpers.js');
const { waitFor } = require('./helpers.js');

const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => fs.existsSync(p));

/** Resolves with { port, url, stop() } once nginx accepts connections. */
async function startNginx(upstreamPort, { location = '' } = {}) {
  if (!NGINX) throw new Error('nginx not found: install Debian package nginx (npm test does so as root)');
  const prefix = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-nginx-'));
  const port = await freePort();
  const conf = path.join(prefix, 'nginx.conf');
  fs.writeFileSync(
    conf,
    `
daemon off;
master_process off;
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://127.0.0.1:${upstreamPort};
      ${location}
    }
  }
}
`,
  );
  const child = spawn(NGINX, ['-p', prefix, '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const net = require('node:net');
  const accepts = () =>
    new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
  try {
    await waitFor(async () => child.exitCode === null && (await accepts()), 'nginx listening', 10_000);
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(
      `${err.message}: ${stderr}${fs.existsSync(`${prefix}/error.log`) ? fs.readFileSync(`${prefix}/error.log`, 'utf8') : ''}`,
    );
  }
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGQUIT');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      fs.rmSync(prefix, { recursive: true, force: true });
    },
  };
}

module.exports = { startNginx, NGINX };
