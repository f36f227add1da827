// PM2: two instances in cluster mode on one Redis stream (pm2 start
// ecosystem.config.js; pm2 reload app restarts them one at a time).
module.exports = {
  apps: [
    {
      name: 'app',
      script: './redis.js',
      instances: 2,
      exec_mode: 'cluster',
      // PM2 sends SIGINT, then SIGKILL after kill_timeout (1600 ms by default):
      // drainOnSignals' timeoutMs (default 1400 ms) stays inside it.
      kill_timeout: 1600,
      env: { REDIS_URL: 'redis://127.0.0.1:6379', PORT: '3000' },
    },
  ],
};
