import { expect, Page, TestInfo } from '@playwright/test';

export const ADMIN = { username: 'admin', password: process.env.TRIALFLOW_E2E_ADMIN_PASSWORD ?? 'e2e-admin-password' };
export const VIEWER = { username: 'viewer', password: process.env.TRIALFLOW_E2E_VIEWER_PASSWORD ?? 'e2e-viewer-password' };

/** True in the project that runs with JavaScript, where the page must hydrate. */
export function isHydrated(testInfo: TestInfo): boolean {
  return testInfo.project.name === 'hydrated';
}

/** Waits until the wasm bundle has taken over the server-rendered page. */
export async function waitForHydration(page: Page, testInfo: TestInfo) {
  if (isHydrated(testInfo)) {
    await expect(page.locator('body[data-hydrated]')).toHaveCount(1);
  }
}

export async function signIn(page: Page, who: { username: string; password: string }) {
  await page.goto('/login');
  await page.getByLabel('Username').fill(who.username);
  await page.getByLabel('Password').fill(who.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByTestId('current-user')).toContainText(who.username);
}

export async function snap(page: Page, testInfo: TestInfo, name: string) {
  await page.screenshot({ path: testInfo.outputPath(`${name}.png`), fullPage: true });
}
