// A real nginx (Debian's) on a free loopback port, in front of an upstream,
// with its default proxy settings unless a test adds its own: `proxy_pass`
// speaks HTTP/1.0 to the upstream with `Connection: close`. Its files live
// in a temporary prefix; stop() ends it and removes them. The benchmark
// (bench/run.js, the behind-nginx rows) starts its nginx here too, with room
// for more connections.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { onFreePorts } = require('./redis-helpers.js');

const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => fs.existsSync(p));

// Not helpers.js's waitFor: that file loads the package, and the benchmark's
// harness, which starts nginx here, must not.
async function waitFor(predicate, what, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Resolves with { port, url, pid, stop() } once nginx accepts connections.
 * `connections` is its worker_connections: every proxied request holds two,
 * the client's and the upstream's. Above the default, nginx runs with an
 * open-files limit raised to fit them (up to the hard limit).
 */
function startNginx(upstreamPort, { location = '', connections = 256 } = {}) {
  if (!NGINX) throw new Error('nginx not found: install Debian package nginx (npm test does so as root)');
  return onFreePorts(1, (port) => launchNginx(port, upstreamPort, location, connections));
}

async function launchNginx(port, upstreamPort, location, connections) {
  const prefix = fs.mkdtempSync(path.join(os.tmpdir(), 'sse-nginx-'));
  const conf = path.join(prefix, 'nginx.conf');
  fs.writeFileSync(
    conf,
    `
daemon off;
master_process off;
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections ${connections}; }
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
  const argv = [NGINX, '-p', prefix, '-c', conf];
  // With master_process off, worker_rlimit_nofile does not apply: the limit
  // is the one nginx starts with, so bash raises it and execs nginx (same pid).
  const raise = 'ulimit -n "$1" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null; shift; exec "$@"';
  const child =
    connections > 256
      ? spawn('bash', ['-c', raise, 'nginx', String(connections + 64), ...argv], {
          stdio: ['ignore', 'ignore', 'pipe'],
        })
      : spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
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
  const exitedEarly = () => child.exitCode !== null || child.signalCode !== null;
  try {
    // An nginx that exits (a port taken before its bind) is a failure now,
    // not after the timeout; accepting is checked again after, so a server
    // that took the port first is not mistaken for ours.
    await waitFor(async () => exitedEarly() || (await accepts()), 'nginx listening', 10_000);
    if (exitedEarly()) throw new Error(`nginx exited (${child.exitCode ?? child.signalCode})`);
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    const log = fs.existsSync(`${prefix}/error.log`) ? fs.readFileSync(`${prefix}/error.log`, 'utf8') : '';
    fs.rmSync(prefix, { recursive: true, force: true });
    throw new Error(`${err.message}: ${stderr}${log}`);
  }
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    pid: child.pid,
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
