import { defineConfig } from '@playwright/test';

// scripts/test.sh builds once, prepares a fresh data directory with the test users, and sets these.
const port = process.env.TRIALFLOW_E2E_PORT ?? '3137';
const dataDir = process.env.TRIALFLOW_E2E_DATA ?? '../target/e2e-data';
const binary = process.env.TRIALFLOW_BIN ?? '../target/debug/trialflow';

export default defineConfig({
  testDir: './tests',
  workers: 1,
  retries: 0,
  timeout: 60_000,
  expect: { timeout: 15_000 },
  outputDir: './test-results',
  reporter: [['list']],
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    screenshot: 'on',
    trace: 'retain-on-failure',
    launchOptions: {
      // Debian's Chromium; Playwright's own browser download is not reachable here.
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    },
  },
  projects: [
    { name: 'hydrated', use: { javaScriptEnabled: true } },
    { name: 'no-js', use: { javaScriptEnabled: false } },
  ],
  webServer: {
    // Demo mode, as the run command starts it: the simulator and the imednet_default connection.
    command: `${binary} serve --demo --addr 127.0.0.1:${port} --data-dir ${dataDir}`,
    url: `http://127.0.0.1:${port}/healthz`,
    reuseExistingServer: false,
    timeout: 60_000,
    stdout: 'pipe',
    stderr: 'pipe',
  },
});
