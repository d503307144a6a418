#!/usr/bin/env node
// Loads one page in Debian's headless Chromium (through playwright-core), performs the job's actions,
// and prints what the page showed as one JSON object on stdout: errors, requests, the conventional
// `data-figure` / `data-chart` / `data-link` elements, counts and texts of selectors; it saves a
// full-page screenshot. The Rust side is tests/src/browser.rs; the conventions are docs/browser-tests.md.
//
//   node tests/browser/check.mjs '<job JSON>'     or     node tests/browser/check.mjs < job.json
//
// An array of jobs runs them in order in one Chromium (one launch), each on a fresh page, and prints
// an array of reports; they must agree on "chromium", "step_timeout_ms" and "viewport".
//
// Job: {
//   "url": "file:///…" | "http://127.0.0.1:PORT/…",
//   "screenshot": "/abs/path.png",              (optional)
//   "chromium": "/usr/bin/chromium",            (optional; else $GRANTWATCH_CHROMIUM, else /usr/bin/chromium)
//   "step_timeout_ms": 15000,                   (optional; every launch, navigation, action and read)
//   "viewport": {"width": 1280, "height": 900}, (optional)
//   "actions": [ {"click": SEL, "navigates": true?}, {"fill": SEL, "value": S}, {"press": SEL, "key": K},
//                {"select": SEL, "value": S}, {"check": SEL}, {"wait_for": SEL},
//                {"wait_for_url": SUBSTRING} ],
//   "count": [SEL, …],                          (optional: number of matches of each)
//   "text":  [SEL, …]                           (optional: trimmed text of each match, in document order)
// }
//
// The page's own failings (console errors, uncaught exceptions, failed or non-local requests) are
// reported, with exit status 0: judging them is the caller's job. Exit status 2: the job is malformed or
// the driver is not installed; 3: Chromium cannot start; 4: a step (navigation, action, read) failed or
// timed out, named in the message on stderr.

import { mkdtempSync, rmSync, accessSync, constants, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function die(code, message) {
  process.stderr.write(`check.mjs: ${message}\n`);
  process.exit(code);
}

// One job, or an array of jobs run one after another in one Chromium (each on a fresh page).
function readJobs() {
  const raw = process.argv[2] && process.argv[2] !== '-' ? process.argv[2] : readFileSync(0, 'utf8');
  let input;
  try {
    input = JSON.parse(raw);
  } catch (e) {
    die(2, `the job is not JSON: ${e.message}`);
  }
  const jobs = Array.isArray(input) ? input : [input];
  if (jobs.length === 0) die(2, 'no jobs');
  for (const job of jobs) checkJob(job);
  for (const key of ['chromium', 'step_timeout_ms', 'viewport']) {
    if (jobs.some((j) => JSON.stringify(j[key]) !== JSON.stringify(jobs[0][key]))) {
      die(2, `the jobs of one run share one Chromium: "${key}" must be the same in each`);
    }
  }
  return { jobs, batch: Array.isArray(input) };
}

function checkJob(job) {
  if (typeof job !== 'object' || job === null || typeof job.url !== 'string') die(2, 'a job needs a "url" string');
  const known = ['url', 'screenshot', 'chromium', 'step_timeout_ms', 'viewport', 'actions', 'count', 'text'];
  for (const key of Object.keys(job)) if (!known.includes(key)) die(2, `unknown job key "${key}"`);
  let scheme;
  try {
    scheme = new URL(job.url).protocol;
  } catch {
    die(2, `"url" is not a URL: ${job.url}`);
  }
  if (!['file:', 'http:'].includes(scheme) || (scheme === 'http:' && !isLocal(job.url))) {
    die(2, `"url" must be file:// or http:// on the loopback, not ${job.url}`);
  }
}

// Loopback and the schemes that never leave the machine. Everything else is "non-local": a
// self-contained page makes no such request.
function isLocal(url) {
  let u;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  if (['file:', 'data:', 'blob:', 'about:', 'chrome-error:'].includes(u.protocol)) return true;
  return ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname);
}

// One step under the step time limit, named in the error when it fails.
async function step(name, ms, f) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([f(), limit]);
  } catch (e) {
    throw new Error(`${name}: ${e.message.split('\n')[0]}`);
  } finally {
    clearTimeout(timer);
  }
}

async function act(page, a, ms) {
  if ('click' in a) {
    const before = page.url();
    await page.click(a.click, { timeout: ms });
    if (a.navigates) await page.waitForURL((u) => u.toString() !== before, { timeout: ms, waitUntil: 'load' });
  } else if ('fill' in a) {
    await page.fill(a.fill, String(a.value ?? ''), { timeout: ms });
  } else if ('press' in a) {
    await page.press(a.press, String(a.key), { timeout: ms });
  } else if ('select' in a) {
    await page.selectOption(a.select, String(a.value), { timeout: ms });
  } else if ('check' in a) {
    await page.check(a.check, { timeout: ms });
  } else if ('wait_for' in a) {
    await page.waitForSelector(a.wait_for, { timeout: ms, state: 'visible' });
  } else if ('wait_for_url' in a) {
    await page.waitForURL((u) => u.toString().includes(a.wait_for_url), { timeout: ms, waitUntil: 'load' });
  } else {
    throw new Error(`unknown action ${JSON.stringify(a)}`);
  }
}

// Everything read from the page in one evaluation, after the actions.
function readPage({ count, text }) {
  const clean = (s) => (s ?? '').replace(/\s+/g, ' ').trim();
  const conflicts = [];
  const figures = {};
  for (const el of document.querySelectorAll('[data-figure]')) {
    const name = el.getAttribute('data-figure');
    const value = clean(el.textContent);
    if (name in figures && figures[name] !== value) conflicts.push(`figure "${name}": "${figures[name]}" and "${value}"`);
    figures[name] = value;
  }
  const charts = {};
  for (const el of document.querySelectorAll('svg[data-chart]')) {
    const name = el.getAttribute('data-chart');
    const points = el.querySelectorAll('.point').length;
    if (name in charts && charts[name] !== points) conflicts.push(`chart "${name}": ${charts[name]} and ${points} points`);
    charts[name] = points;
  }
  const links = {};
  for (const el of document.querySelectorAll('a[data-link]')) {
    const name = el.getAttribute('data-link');
    (links[name] ??= []).push(el.href);
  }
  const counts = {};
  for (const sel of count) counts[sel] = document.querySelectorAll(sel).length;
  const texts = {};
  for (const sel of text) texts[sel] = [...document.querySelectorAll(sel)].map((el) => clean(el.textContent));
  return { title: document.title, figures, charts, links, counts, texts, conflicts };
}

async function main() {
  const { jobs, batch } = readJobs();
  const first = jobs[0];
  const ms = Number.isInteger(first.step_timeout_ms) && first.step_timeout_ms > 0 ? first.step_timeout_ms : 15000;
  const chromium = first.chromium || process.env.GRANTWATCH_CHROMIUM || '/usr/bin/chromium';
  try {
    accessSync(chromium, constants.X_OK);
  } catch {
    die(3, `Chromium cannot start: ${chromium} is not an executable (run scripts/setup-deps, or set GRANTWATCH_CHROMIUM)`);
  }
  let playwright;
  try {
    playwright = await import('playwright-core');
  } catch (e) {
    die(2, `playwright-core is not installed in tests/browser/node_modules (run scripts/setup-deps): ${e.message}`);
  }

  // A fresh profile each run: no state from other runs, and nothing of the machine's own Chromium.
  const profile = mkdtempSync(join(tmpdir(), 'grantwatch-chromium-'));
  let context;
  try {
    context = await step('launch Chromium', ms, () =>
      playwright.chromium.launchPersistentContext(profile, {
        executablePath: chromium,
        headless: true,
        // The closed network refuses Chromium's own background connections; these flags stop it
        // from trying (and from stalling on them).
        args: [
          '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
          '--disable-background-networking', '--disable-component-update', '--disable-sync',
        ],
        viewport: first.viewport ?? { width: 1280, height: 900 },
        timeout: ms,
      }),
    );
  } catch (e) {
    rmSync(profile, { recursive: true, force: true });
    die(3, `Chromium cannot start (${chromium}): ${e.message}`);
  }

  const reports = [];
  let failure = null;
  for (const [i, job] of jobs.entries()) {
    const { report, error } = await runJob(context, job, ms);
    if (error) {
      failure = batch ? `job ${i + 1} (${job.url}): ${error}` : error;
      break;
    }
    reports.push(report);
  }
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  if (failure) die(4, failure);
  process.stdout.write(JSON.stringify(batch ? reports : reports[0]) + '\n');
}

// One job on a fresh page of the running Chromium: { report } or { error } (a failed step).
async function runJob(context, job, ms) {
  const report = {
    url: job.url,
    title: '',
    console_errors: [],
    page_errors: [],
    failed_requests: [],
    external_requests: [],
    figures: {},
    charts: {},
    links: {},
    counts: {},
    texts: {},
    conflicts: [],
    screenshot: null,
  };
  const page = await context.newPage();
  const external = new Set();
  // Non-local requests are recorded and refused, so a page that reaches out fails fast and visibly.
  await page.route(
    (url) => !isLocal(url.toString()),
    (route) => {
      report.external_requests.push(route.request().url());
      external.add(route.request());
      return route.abort('blockedbyclient');
    },
  );
  page.on('console', (m) => {
    if (m.type() === 'error') {
      const loc = m.location();
      report.console_errors.push(loc && loc.url ? `${m.text()} (${loc.url}:${loc.lineNumber + 1})` : m.text());
    }
  });
  page.on('pageerror', (e) => report.page_errors.push(String(e.message ?? e)));
  page.on('requestfailed', (r) => {
    if (!external.has(r)) report.failed_requests.push(`${r.url()}: ${r.failure()?.errorText ?? 'failed'}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) report.failed_requests.push(`${r.url()}: HTTP ${r.status()}`);
  });
  page.on('websocket', (ws) => {
    if (!isLocal(ws.url())) report.external_requests.push(ws.url());
  });

  let failure = null;
  try {
    await step(`open ${job.url}`, ms, () => page.goto(job.url, { waitUntil: 'load', timeout: ms }));
    for (const [i, a] of (job.actions ?? []).entries()) {
      await step(`action ${i + 1} ${JSON.stringify(a)}`, ms, () => act(page, a, ms));
    }
    const read = await step('read the page', ms, () =>
      page.evaluate(readPage, { count: job.count ?? [], text: job.text ?? [] }),
    );
    Object.assign(report, read);
    report.url = page.url();
  } catch (e) {
    failure = e;
  }
  // The screenshot is taken even when a step failed: it is what one looks at first.
  if (job.screenshot) {
    try {
      await step('screenshot', ms, () => page.screenshot({ path: job.screenshot, fullPage: true, timeout: ms }));
      report.screenshot = job.screenshot;
    } catch (e) {
      failure ??= e;
    }
  }
  await page.close().catch(() => {});
  if (failure) return { error: `${failure.message}${report.screenshot ? ` (screenshot: ${report.screenshot})` : ''}` };
  return { report };
}

main().catch((e) => die(4, e.stack || String(e)));
