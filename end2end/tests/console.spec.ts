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
  // The timeline is drawn on the server: there with and without JavaScript.
  await expect(page.getByTestId('run-timeline')).toBeVisible();
  await expect(page.getByTestId('run-timeline').locator('g[data-lane="DEMO"] rect').first()).toBeVisible();
  await page.goto(`/pipelines/${REFERENCE}`);
  await expect(page.getByTestId('run-history').locator('rect.bar').first()).toBeVisible();
  await snap(page, testInfo, '13-pipeline-history');
  await page.goto(runUrl);

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
  await expect(page.getByTestId('audit-chain')).toHaveAttribute('data-ok', 'true');
  await expect(page.getByTestId('audit-chain')).toContainText('Hash chain intact');
  const exported = await page.request.get('/audit/export.json');
  expect(exported.status()).toBe(200);
  expect((await exported.json()).chain.broken).toBeNull();
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

/** Controls that leave their table's visible box, or overlap a neighbour in the same cell. */
async function layoutProblems(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const problems: string[] = [];
    const label = (el: Element) => `${el.tagName.toLowerCase()} "${(el.textContent ?? '').trim().slice(0, 40)}"`;
    for (const wrap of Array.from(document.querySelectorAll('.table-wrap'))) {
      const box = wrap.getBoundingClientRect();
      const table = wrap.querySelector('table');
      if (table && table.scrollWidth > wrap.clientWidth + 1) {
        problems.push(`table ${table.dataset.testid ?? ''} is ${table.scrollWidth}px wide in a ${wrap.clientWidth}px frame`);
      }
      const controls = Array.from(wrap.querySelectorAll('a, button, input, select'))
        // Visible ones only: not inside a closed <details> (its summary excepted) or sr-only text.
        .filter((el) => el.checkVisibility() && !el.closest('.sr-only'))
        .filter((el) => !el.closest('details:not([open])') || el.closest('summary'));
      for (const el of controls) {
        const r = el.getBoundingClientRect();
        if (r.right > box.right + 0.5 || r.left < box.left - 0.5) {
          problems.push(`${label(el)} runs off its table (${Math.round(r.right)} > ${Math.round(box.right)})`);
        }
      }
      for (const cell of Array.from(wrap.querySelectorAll('td, th'))) {
        const inCell = controls.filter((el) => cell.contains(el)).map((el) => [el, el.getBoundingClientRect()] as const);
        for (let i = 0; i < inCell.length; i++) {
          for (let j = i + 1; j < inCell.length; j++) {
            const [a, ra] = inCell[i];
            const [b, rb] = inCell[j];
            if (a.contains(b) || b.contains(a)) continue;
            const overlap = ra.left < rb.right - 0.5 && rb.left < ra.right - 0.5 && ra.top < rb.bottom - 0.5 && rb.top < ra.bottom - 0.5;
            if (overlap) problems.push(`${label(a)} overlaps ${label(b)}`);
          }
        }
      }
      for (const when of Array.from(wrap.querySelectorAll('time'))) {
        const lines = when.getClientRects().length;
        const height = when.getBoundingClientRect().height;
        const lineHeight = parseFloat(getComputedStyle(when).lineHeight) || 20;
        if (lines > 1 || height > lineHeight * 1.5) problems.push(`time "${when.textContent}" wraps`);
      }
    }
    return problems;
  });
}

test('at 1280 and 1920 px no control leaves its table, times stay on one line and no request fails', async ({ page }, testInfo) => {
  test.skip(!isHydrated(testInfo), 'layout is the same without JavaScript; checked once');
  const failures: string[] = [];
  page.on('response', (r) => { if (r.status() >= 400) failures.push(`${r.status()} ${r.url()}`); });
  page.on('requestfailed', (r) => {
    // A request the browser itself cancels by navigating on (an event stream, or the sign-in
    // page's wasm when the form is sent before it arrives) is not a failure; every answer
    // the server gives is checked above.
    const error = r.failure()?.errorText ?? '';
    if (!error.includes('ERR_ABORTED')) failures.push(`${error} ${r.url()}`);
  });
  await signIn(page, ADMIN);
  const runUrl = await triggerReference(page, true);
  await waitForRunState(page, true, 'success');
  const pages = [runUrl, '/', '/pipelines', `/pipelines/${REFERENCE}`, '/runs', '/pools', '/connections', '/flows', '/audit', '/users'];
  for (const width of [1280, 1920]) {
    await page.setViewportSize({ width, height: 900 });
    for (const url of pages) {
      await page.goto(url);
      await waitForHydration(page, testInfo);
      expect(await layoutProblems(page), `${url} at ${width}px`).toEqual([]);
    }
    await page.goto(runUrl);
    await waitForHydration(page, testInfo);
    await snap(page, testInfo, `run-page-${width}`);
  }
  expect(failures).toEqual([]);
});
