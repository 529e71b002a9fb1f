import { expect, Page, test } from '@playwright/test';
import * as fs from 'fs';
import { ADMIN, VIEWER, isHydrated, signIn, snap, waitForHydration } from './helpers';

const REFERENCE = 'imednet_multi_study_reference';
// The demo simulator's control endpoints take its API keys (the demo connection's, which are public).
const SIM_KEYS = { 'x-api-key': 'demo-api-key', 'x-imn-security-key': 'demo-security-key' };

/** Waits for the run page to show `state`: live when hydrated (no reload), by reloading otherwise. */
async function waitForRunState(page: Page, hydrated: boolean, state: string) {
  if (hydrated) {
    await expect(page.getByTestId('run-state')).toContainText(state, { timeout: 60_000 });
  } else {
    await expect(async () => {
      await page.reload();
      await expect(page.getByTestId('run-state')).toContainText(state, { timeout: 1000 });
    }).toPass({ timeout: 60_000 });
  }
}

/** Triggers the reference pipeline from its page (hydrated) or its API (no JavaScript). */
async function triggerReference(page: Page, hydrated: boolean): Promise<string> {
  if (hydrated) {
    await page.goto(`/pipelines/${REFERENCE}`);
    await expect(page.locator('body[data-hydrated]')).toHaveCount(1);
    await page.getByTestId('trigger').getByRole('button', { name: 'Trigger' }).click();
    const open = page.getByRole('link', { name: 'Open it' });
    await expect(open).toBeVisible();
    const href = (await open.getAttribute('href'))!;
    await open.click();
    await expect(page).toHaveURL(new RegExp(`${href}$`));
    return href;
  }
  const res = await page.request.post('/api/user/trigger_run', { form: { pipeline_id: REFERENCE, conf: '{}' } });
  expect(res.status()).toBe(200);
  const href = `/runs/${(await res.text()).trim()}`;
  await page.goto(href);
  return href;
}

test('13: trigger the reference pipeline, watch it succeed live, read a log, download a CSV', async ({ page }, testInfo) => {
  const hydrated = isHydrated(testInfo);
  await signIn(page, ADMIN);
  const runUrl = await triggerReference(page, hydrated);
  await waitForHydration(page, testInfo);
  // A reload would clear this marker: the counters must reach success without one.
  await page.evaluate(() => { (window as any).__noReload = true; });
  await waitForRunState(page, hydrated, 'success');
  if (hydrated) {
    expect(await page.evaluate(() => (window as any).__noReload)).toBe(true);
  }
  const exportTask = page.getByTestId('run-tasks').locator('tr[data-task="export_records"]');
  await expect(exportTask).toContainText('3 of 3 finished');
  for (const key of ['CV 3/B', 'DEMO', 'ONC-202']) {
    await expect(page.getByTestId('run-instances')).toContainText(key);
  }
  await snap(page, testInfo, '13-run-success');

  await page.getByTestId('run-instances').getByRole('link', { name: 'DEMO', exact: true }).click();
  await expect(page.getByTestId('instance-state')).toContainText('success');
  await expect(page.getByTestId('task-log').first()).toContainText('exporting DEMO');
  await expect(page.getByTestId('task-log').first()).toContainText('wrote');
  await expect(page.getByTestId('instance-output')).toContainText('sha256');
  await snap(page, testInfo, '13-instance-log');

  await page.goto(runUrl);
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: 'DEMO.csv' }).click(),
  ]);
  const text = fs.readFileSync((await download.path())!, 'utf8');
  expect(text.startsWith('recordId,subjectKey,visitId,formId,recordStatus,dateCreated,')).toBeTruthy();
  expect(text.trim().split('\n').length).toBeGreaterThan(100);
});

test('14: a failing study fails its instance; "clear failed" re-runs only it; the audit log shows it', async ({ page }, testInfo) => {
  test.skip(!isHydrated(testInfo), 'actions need JavaScript');
  await signIn(page, ADMIN);
  // The simulator refuses DEMO's variables with 400: a fatal error, so the instance fails at once.
  const fault = { rules: [{ study: 'DEMO', endpoint: 'variables', kind: { type: 'status', status: 400 } }] };
  expect((await page.request.put('/sim/__sim/faults', { data: fault, headers: SIM_KEYS })).status()).toBe(200);
  try {
    await triggerReference(page, true);
    await waitForRunState(page, true, 'failed');
    const failed = page.locator('[data-testid="run-instances"] tr[data-key="DEMO"]');
    await expect(failed).toHaveAttribute('data-state', 'failed');
    await expect(page.locator('[data-testid="run-instances"] tr[data-key="ONC-202"]')).toHaveAttribute('data-state', 'success');
    await snap(page, testInfo, '14-run-failed');
  } finally {
    expect((await page.request.put('/sim/__sim/faults', { data: {}, headers: SIM_KEYS })).status()).toBe(200);
  }
  const actions = page.getByTestId('run-actions');
  await actions.getByRole('button', { name: /Clear failed/ }).click();
  await actions.getByRole('button', { name: 'Confirm' }).click();
  await expect(page.getByRole('status')).toContainText('Cleared 1 failed');
  await waitForRunState(page, true, 'success');
  // Try 2; clearing grants the task's retries afresh, so the try count reads 2 of 5.
  await expect(page.locator('[data-testid="run-instances"] tr[data-key="DEMO"]')).toHaveAttribute('data-state', 'success');
  await expect(page.locator('[data-testid="run-instances"] tr[data-key="DEMO"]')).toContainText('2/5');
  await expect(page.locator('[data-testid="run-instances"] tr[data-key="ONC-202"]')).toContainText('1/4');
  await snap(page, testInfo, '14-run-cleared');

  await page.goto('/audit?action=run.');
  const audit = page.getByTestId('audit');
  await expect(audit.locator('tr[data-action="run.clear_failed"]').first()).toContainText('admin');
  await expect(audit.locator('tr[data-action="run.trigger"]').first()).toContainText(REFERENCE);
  await snap(page, testInfo, '14-audit');
});

test('15: a viewer sees runs without controls, and the server refuses their actions', async ({ page }, testInfo) => {
  await signIn(page, VIEWER);
  await page.goto('/runs');
  await waitForHydration(page, testInfo);
  const firstRun = page.getByTestId('runs').getByRole('link', { name: /^#\d+$/ }).first();
  await expect(firstRun).toBeVisible();
  const runUrl = (await firstRun.getAttribute('href'))!;
  await page.goto(runUrl);
  await waitForHydration(page, testInfo);
  await expect(page.getByTestId('run-tasks')).toBeVisible();
  await expect(page.getByTestId('run-actions')).toHaveCount(0);
  await expect(page.getByRole('button', { name: /Clear|Mark|Cancel|Trigger/ })).toHaveCount(0);
  await page.goto(`/pipelines/${REFERENCE}`);
  await expect(page.getByTestId('task-graph')).toBeVisible();
  await expect(page.getByTestId('trigger')).toHaveCount(0);
  await snap(page, testInfo, '15-viewer');

  const runId = runUrl.split('/').pop()!;
  for (const [path, form] of [
    ['/api/user/run_action', { run_id: runId, action: 'clear_failed' }],
    ['/api/user/retrigger_run', { run_id: runId }],
    ['/api/user/trigger_form', { pipeline_id: REFERENCE }],
    ['/api/op/save_pool', { name: 'imednet_exports', slots: '1' }],
  ] as const) {
    const res = await page.request.post(path, { form: form as Record<string, string> });
    expect(res.status(), path).toBe(403);
  }
});

test('the run list filters by state and the console reads well on a phone', async ({ page }, testInfo) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await signIn(page, ADMIN);
  await page.goto('/runs?state=success');
  await expect(page.getByTestId('runs')).toBeVisible();
  const states = await page.getByTestId('runs').locator('tbody tr td:nth-child(3)').allInnerTexts();
  expect(states.length).toBeGreaterThan(0);
  expect(states.every((s) => s.trim() === 'success')).toBeTruthy();
  // Labels on the filters, reachable by keyboard.
  await expect(page.getByLabel('State')).toBeVisible();
  await page.getByLabel('Pipeline').focus();
  await page.keyboard.press('Tab');
  await expect(page.getByLabel('State')).toBeFocused();
  await snap(page, testInfo, 'phone-runs');
});
