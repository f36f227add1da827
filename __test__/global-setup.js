// Runs once before the test files (Jest's globalSetup). The Redis bus tests
// start their own redis-server; a fresh Debian machine does not have one,
// so `npm test` installs Debian's package when it can (as root, with apt),
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

module.exports = async function globalSetup() {
  if (onPath('redis-server')) return;
  if (process.getuid?.() !== 0 || !onPath('apt-get')) {
    console.warn('\nredis-server is missing and cannot be installed here: install it to run the Redis bus tests');
    return;
  }
  console.log('\nredis-server is missing: installing Debian package redis-server for the Redis bus tests');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { env, stdio: 'inherit' });
  execFileSync('apt-get', ['install', '-y', '-qq', 'redis-server'], { env, stdio: 'inherit' });
};
