// Drives aqueduct serve's dashboard in Debian's headless Chromium (never a downloaded browser):
// a wrong key is refused, sign in, open a connection, follow a failed request of a run, map a
// code from the review queue, start a sync and see it finish, and a POST without the session's
// CSRF token is refused with 403. Prints what it saw as JSON; any surprise exits non-zero.
//
// usage: node flow.mjs BASE_URL API_KEY CONNECTION CHROMIUM_PATH HOSTILE_PATIENT_ID
import { chromium } from 'playwright-core';

const [base, key, connection, executablePath, hostile] = process.argv.slice(2);
const seen = {};
const fail = (what) => { throw new Error(what); };
const check = (ok, what) => { if (!ok) fail(what); };

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // root in CI containers: Chromium's sandbox needs user namespaces it may not have
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  // patient data is hostile: no page may ever run a script or open a dialog
  seen.dialogs = 0;
  page.on('dialog', async (d) => { seen.dialogs += 1; await d.dismiss(); });

  // 1. not signed in: the sign-in page; a wrong key is refused
  await page.goto(`${base}/dashboard/`);
  check(page.url().endsWith('/dashboard/login'), `not sent to sign in: ${page.url()}`);
  await page.fill('#api_key', 'aqk_0123456789abcdef_wrong');
  const [refused] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/dashboard/login') && r.request().method() === 'POST'),
    page.click('button[type=submit]'),
  ]);
  check(refused.status() === 401, `a wrong key answered ${refused.status()}`);
  seen.wrong_key = (await page.textContent('#login-error')).trim();

  // 2. sign in
  await page.fill('#api_key', key);
  await Promise.all([page.waitForURL(`${base}/dashboard/`), page.click('button[type=submit]')]);
  const cookie = (await context.cookies()).find((c) => c.name === 'aqueduct_session');
  check(cookie, 'no session cookie');
  check(cookie.httpOnly && cookie.sameSite === 'Strict', `session cookie flags: ${JSON.stringify(cookie)}`);
  seen.cookie = { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite, secure: cookie.secure };
  seen.charts = await page.locator('svg').count();
  check(seen.charts >= 3, `the overview draws ${seen.charts} charts`);

  // 3. open the connection, then its newest run with a failure
  await Promise.all([page.waitForURL(/\/dashboard\/connections\/[^/]+$/), page.click(`#connections a:text-is("${connection}")`)]);
  seen.connection_state = (await page.textContent('#state')).trim();
  const runLinks = await page.locator('#runs a').all();
  check(runLinks.length > 0, 'no runs listed');
  let failedRow = null;
  for (const link of runLinks) {
    const href = await link.getAttribute('href');
    await page.goto(`${base}${href}`);
    const n = Number((await page.textContent('#failed-count')).trim());
    if (n > 0) { failedRow = page.locator('#ledger tbody tr').first(); break; }
  }
  check(failedRow, 'no run with a failed request');
  check((await failedRow.getAttribute('class')) === 'failed', 'failures are not listed first');

  // 4. follow the failed request
  await Promise.all([page.waitForURL(/\/requests\/\d+$/), failedRow.locator('a').first().click()]);
  seen.failed_request = {
    outcome: (await page.textContent('#request-outcome')).trim(),
    status: (await page.textContent('#request-status')).trim(),
    error: (await page.textContent('#request-error')).trim(),
  };
  check(seen.failed_request.outcome === 'failed' && seen.failed_request.error !== 'none',
    `the request page: ${JSON.stringify(seen.failed_request)}`);

  // 4b. the connection's patients, and one patient's record at this source
  await page.goto(`${base}/dashboard/connections/${connection}`);
  await Promise.all([page.waitForURL(/\/patients$/), page.click('a:text-is("Patients")')]);
  await Promise.all([page.waitForURL(/\/patients\/[^/]+$/), page.locator('#patients tbody a:not([href$="/hostile"])').first().click()]);
  seen.patient = (await page.textContent('#patient-name')).trim();
  seen.record_rows = await page.locator('#record tbody tr').count();
  check(seen.record_rows > 0, 'the patient record is empty');

  // 4c. a patient whose name is markup: shown as text, nothing runs
  await page.goto(`${base}/dashboard/connections/${connection}/patients/${hostile}`);
  seen.hostile_name = (await page.textContent('#patient-name')).trim();
  check(seen.hostile_name.includes('<script>alert(1)</script>'), `the hostile name: ${seen.hostile_name}`);
  check(await page.locator('main img').count() === 0, 'markup from patient data became an element');

  // 5. map a code from the terminology review queue
  await page.click('nav a:text-is("Terminology")');
  const row = page.locator('#unmapped tbody tr[data-code$="|LAB-GLU-POC"]').first();
  check(await row.count() === 1, 'LAB-GLU-POC is not in the review queue');
  await row.locator('select[name=target_system]').selectOption('http://loinc.org');
  await row.locator('input[name=target_code]').fill('2345-7');
  await Promise.all([page.waitForURL(/\/dashboard\/terminology\?mapped=/), row.locator('button').click()]);
  seen.mapped = (await page.textContent('#mapped')).trim();
  check((await page.textContent('#mappings')).includes('2345-7'), 'the mapping is not listed');

  // 6. a POST without the session's CSRF token is refused, even with the session's cookie
  const noToken = await context.request.post(`${base}/dashboard/connections/${connection}/sync`, { form: {}, maxRedirects: 0 });
  const forged = await context.request.post(`${base}/dashboard/connections/${connection}/sync`, { form: { csrf: 'forged' }, maxRedirects: 0 });
  seen.csrf_refused = [noToken.status(), forged.status()];
  check(noToken.status() === 403 && forged.status() === 403, `POST without the token: ${seen.csrf_refused}`);

  // 7. start a sync and watch it finish (the page reloads itself until then)
  await page.goto(`${base}/dashboard/connections/${connection}`);
  await Promise.all([page.waitForURL(/\/dashboard\/refresh-requests\/\d+$/), page.click('#sync')]);
  seen.refresh_request = page.url().split('/').pop();
  const deadline = Date.now() + 120000;
  let state = '';
  while (Date.now() < deadline) {
    state = await page.locator('#refresh-state').textContent().catch(() => '');
    if (state && state.trim() === 'done') break;
    await page.waitForTimeout(300);
  }
  check(state.trim() === 'done', `the sync did not finish: ${state}`);
  seen.refresh_outcome = (await page.textContent('#refresh-outcome')).trim();
  await Promise.all([page.waitForURL(/\/runs\/\d+$/), page.click('a.run')]);
  seen.new_run = page.url().split('/').pop();

  // 8. the mapped code left the queue: the sync derived its rows again
  await page.click('nav a:text-is("Terminology")');
  seen.still_unmapped = await page.locator('#unmapped tbody tr[data-code$="|LAB-GLU-POC"]').count();

  // 9. sign out: the session is gone
  await Promise.all([page.waitForURL(/\/dashboard\/login$/), page.click('header button:text-is("Log out")')]);
  await page.goto(`${base}/dashboard/`);
  seen.after_logout = new URL(page.url()).pathname;
  check(seen.after_logout === '/dashboard/login', `after logout: ${page.url()}`);
  check(seen.dialogs === 0, `${seen.dialogs} dialog(s) opened: patient data ran as script`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
