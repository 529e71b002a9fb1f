import { expect, test } from '@playwright/test';
import * as fs from 'fs';
import { ADMIN, isHydrated, signIn, snap, waitForHydration } from './helpers';

const REFERENCE = 'imednet_multi_study_reference';

test('the reference pipeline exports every demo study and a CSV downloads', async ({ page }, testInfo) => {
  await signIn(page, ADMIN);
  await page.goto('/connections');
  await expect(page.getByTestId('connections-table')).toContainText('imednet_default');
  await expect(page.getByTestId('connections-table')).not.toContainText('demo-api-key');

  let runUrl: string;
  if (isHydrated(testInfo)) {
    await page.goto('/pipelines');
    await waitForHydration(page, testInfo);
    const card = page.locator(`section[data-pipeline="${REFERENCE}"]`);
    await card.getByRole('button', { name: 'Trigger' }).click();
    const open = page.getByRole('link', { name: 'Open it' });
    await expect(open).toBeVisible();
    runUrl = (await open.getAttribute('href'))!;
  } else {
    // Without JavaScript the form posts and comes back; the run id is read from the API answer.
    const res = await page.request.post('/api/user/trigger_run', { form: { pipeline_id: REFERENCE, conf: '{}' } });
    expect(res.status()).toBe(200);
    runUrl = `/runs/${(await res.text()).trim()}`;
  }
  // Live updates arrive with the console; until then the page is reloaded.
  await expect(async () => {
    await page.goto(runUrl);
    await expect(page.locator('h1')).toContainText('success', { timeout: 1000 });
  }).toPass({ timeout: 60_000 });
  for (const key of ['CV 3/B', 'DEMO', 'ONC-202']) {
    await expect(page.getByTestId('run-instances')).toContainText(key);
  }
  await snap(page, testInfo, 'reference-run');

  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('link', { name: 'DEMO.csv' }).click(),
  ]);
  const text = fs.readFileSync((await download.path())!, 'utf8');
  expect(text.startsWith('recordId,subjectKey,visitId,formId,recordStatus,dateCreated,')).toBeTruthy();
  expect(text.trim().split('\n').length).toBeGreaterThan(100);
});
