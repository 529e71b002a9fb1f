import { expect, test } from '@playwright/test';
import { ADMIN, isHydrated, signIn, snap, waitForHydration } from './helpers';

const GREETING = `id: e2e_greeting
params:
  who: { type: string, default: world }
tasks:
  greet:
    operator: echo
    args: { value: "hello {{ params.who }}" }
`;

test('the flows page lists the shipped example and draws its composition', async ({ page }, testInfo) => {
  await signIn(page, ADMIN);
  await page.goto('/flows');
  await expect(page.getByTestId('flows')).toContainText('nightly_exports');
  await page.getByTestId('flows').getByRole('link', { name: 'nightly_exports' }).click();
  await expect(page.locator('h1')).toContainText('nightly_exports');
  await expect(page.getByTestId('composition-graph')).toContainText('total_rows ← save_summary (db)');
  const mappings = page.getByTestId('mappings');
  await expect(mappings).toContainText('summarize_exports.save_summary');
  await expect(mappings).toContainText('["outputs","total_rows"]');
  await expect(mappings).toContainText('top-level parameter export_studies-format');
  await snap(page, testInfo, 'flows-composition');
});

test('an op registers a flow by pasting YAML; registering it again changes nothing', async ({ page }, testInfo) => {
  test.skip(!isHydrated(testInfo), 'registering uses the form action');
  await signIn(page, ADMIN);
  await page.goto('/flows');
  await waitForHydration(page, testInfo);
  const form = page.getByTestId('register-flow');
  await form.getByLabel('Project (for a pipeline)').fill('e2e');
  await form.getByLabel(/^YAML \(a pipeline/).fill(GREETING);
  await form.getByRole('button', { name: 'Register' }).click();
  await expect(form.getByRole('status')).toContainText('Registered e2e/e2e_greeting version 1');
  await expect(page.getByTestId('flows')).toContainText('e2e_greeting');
  await form.getByRole('button', { name: 'Register' }).click();
  await expect(form.getByRole('status')).toContainText('unchanged (version 1)');
  await form.getByLabel('YAML to validate').fill('name: broken\nproject_name: e2e\ncomposing_flows:\n  - name: nowhere\n    project_name: e2e\n');
  await form.getByRole('button', { name: 'Validate' }).click();
  await expect(form.getByRole('alert')).toContainText('nowhere');
  await snap(page, testInfo, 'flows-register');
});
