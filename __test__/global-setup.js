// Runs once before the test files (Jest's globalSetup). The Redis bus tests
// start their own redis-server, the reverse-proxy tests their own nginx; a
// fresh Debian machine has neither, so `npm test` installs Debian's
// packages when it can (as root, with apt),
// once, before the workers start (parallel apt-get runs would fight over
// dpkg's lock). .ci/run installs it the same way with the other packages.

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

function onPath(name) {
  return (process.env.PATH || '')
    .split(path.delimiter)
    .filter(Boolean)
    .some((dir) => {
      try {
        fs.accessSync(path.join(dir, name), fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
}

/** The programs the tests start, and the Debian package of each. */
const PROGRAMS = [
  { program: 'redis-server', pkg: 'redis-server', for: 'the Redis bus tests' },
  { program: 'nginx', pkg: 'nginx', for: 'the reverse-proxy tests', paths: ['/usr/sbin/nginx'] },
];

module.exports = async function globalSetup() {
  const missing = PROGRAMS.filter((p) => !onPath(p.program) && !(p.paths ?? []).some((f) => fs.existsSync(f)));
  if (missing.length === 0) return;
  const what = missing.map((p) => `${p.program} (for ${p.for})`).join(', ');
  if (process.getuid?.() !== 0 || !onPath('apt-get')) {
    console.warn(`\nmissing and not installable here: ${what}; install them to run those tests`);
    return;
  }
  console.log(`\nmissing: ${what}; installing their Debian packages`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { env, stdio: 'inherit' });
  execFileSync('apt-get', ['install', '-y', '-qq', ...missing.map((p) => p.pkg)], { env, stdio: 'inherit' });
};
