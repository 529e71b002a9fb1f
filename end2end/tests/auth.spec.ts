import { expect, test } from '@playwright/test';
import { ADMIN, VIEWER, isHydrated, signIn, snap, waitForHydration } from './helpers';

test('signing in and out', async ({ page }, testInfo) => {
  await page.goto('/');
  await expect(page).toHaveURL(/\/login\?reason=required/);
  await expect(page.getByTestId('login-message')).toHaveText('Sign in to continue.');
  await signIn(page, ADMIN);
  await expect(page).toHaveURL(/\/$/);
  await expect(page.getByRole('heading', { name: 'Dashboard' })).toBeVisible();
  await expect(page.getByTestId('current-user')).toContainText('admin');
  await expect(page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Users' })).toBeVisible();
  await waitForHydration(page, testInfo);
  await snap(page, testInfo, 'dashboard');

  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page.getByTestId('login-message')).toHaveText('You are signed out.');
  await page.goto('/runs');
  await expect(page).toHaveURL(/\/login\?reason=required&next=\/runs/);
});

test('a wrong password is refused with a clear message', async ({ page }, testInfo) => {
  await page.goto('/login');
  await page.getByLabel('Username').fill(`nobody-${testInfo.project.name}`);
  await page.getByLabel('Password').fill('definitely-wrong');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByTestId('login-message')).toHaveText('The username or password is wrong.');
  await expect(page.getByLabel('Username')).toHaveValue(`nobody-${testInfo.project.name}`);
  await snap(page, testInfo, 'wrong-password');
});

test('a viewer cannot open the Users page', async ({ page }, testInfo) => {
  await signIn(page, VIEWER);
  const nav = page.getByRole('navigation', { name: 'Main' });
  await expect(nav.getByRole('link', { name: 'Runs' })).toBeVisible();
  await expect(nav.getByRole('link', { name: 'Users' })).toHaveCount(0);
  const response = await page.goto('/users');
  expect(response?.status()).toBe(403);
  await expect(page.getByRole('alert')).toHaveText('This needs the admin role; you are signed in as viewer.');
  await expect(page.getByTestId('users-table')).toHaveCount(0);
  await snap(page, testInfo, 'viewer-users-forbidden');
});

test('an admin adds a user who can then sign in', async ({ page, browser }, testInfo) => {
  test.skip(!isHydrated(testInfo), 'forms that show their result in place need JavaScript');
  await signIn(page, ADMIN);
  await page.goto('/users');
  await waitForHydration(page, testInfo);
  await page.getByLabel('Username', { exact: true }).fill('olivia');
  await page.getByLabel('Role', { exact: true }).selectOption('op');
  await page.getByLabel('Password', { exact: true }).fill('olivia-password-1');
  await page.getByRole('button', { name: 'Add user' }).click();
  await expect(page.getByRole('status')).toHaveText('Created olivia (op).');
  await expect(page.getByTestId('users-table')).toContainText('olivia');
  await snap(page, testInfo, 'users-after-add');

  const other = await browser.newPage();
  await signIn(other, { username: 'olivia', password: 'olivia-password-1' });
  await expect(other.getByTestId('current-user')).toContainText('op');
  await other.close();
});
