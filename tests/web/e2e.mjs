// End-to-end tests of pixseek's web app in real headless Chromium (Debian's
// chromium driven by playwright-core) against a real `pixseek serve` on
// 127.0.0.1, with a fresh database built from generated pictures. Every flow
// runs at desktop width and at phone width (375x667, touch); screenshots of
// each page go to ARTIFACT_DIR.
//   node e2e.mjs PIXSEEK_BINARY FIXTURE_BINARY ARTIFACT_DIR
// ctest runs it through run_e2e.sh, which skips when node or chromium is absent.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const [pixseek, fixtureBin, artifacts] = process.argv.slice(2);
if (!pixseek || !fixtureBin || !artifacts) {
  console.error("usage: node e2e.mjs PIXSEEK_BINARY FIXTURE_BINARY ARTIFACT_DIR");
  process.exit(2);
}
const chromiumPath = process.env.PIXSEEK_CHROMIUM || "/usr/bin/chromium";

// playwright-core comes from package-lock.json. A missing node_modules is
// installed with `npm ci` in a scratch folder and renamed into place, so two
// build trees running this test at once never see a half-written one.
function ensureModules() {
  if (fs.existsSync(path.join(here, "node_modules", "playwright-core", "package.json"))) return;
  const stage = path.join(here, `node_modules-${process.pid}.tmp`);
  fs.rmSync(stage, { recursive: true, force: true });
  fs.mkdirSync(stage);
  for (const f of ["package.json", "package-lock.json"]) {
    fs.copyFileSync(path.join(here, f), path.join(stage, f));
  }
  console.log("# installing playwright-core with npm ci");
  execFileSync("npm", ["ci", "--no-audit", "--no-fund"], { cwd: stage, stdio: "inherit" });
  try {
    fs.renameSync(path.join(stage, "node_modules"), path.join(here, "node_modules"));
  } catch (e) {
    if (!fs.existsSync(path.join(here, "node_modules"))) throw e;  // else another run won
  }
  fs.rmSync(stage, { recursive: true, force: true });
}
ensureModules();
const { chromium } = await import("playwright-core");

const VIEWPORTS = {
  desktop: { viewport: { width: 1280, height: 800 } },
  phone: { viewport: { width: 375, height: 667 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true },
};
const API_KEYS = ["e2e-key-one", "e2e-key-two"];

const work = fs.mkdtempSync(path.join(os.tmpdir(), "pixseek-web-e2e-"));
const home = path.join(work, "home");
const db = path.join(work, "db");
const importRoot = path.join(work, "import");
const file = (...p) => path.join(work, ...p);
let server = null;  // {child, base, log}
let browser = null;

function pixseekRun(args) {
  return execFileSync(pixseek, ["--home", home, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

// Starts `pixseek serve` on a free port; resolves once it says where it listens.
function startServer(extraEnv, logName, extraArgs = []) {
  const env = { ...process.env, ...extraEnv };
  if (!extraEnv.PIXSEEK_API_KEYS) delete env.PIXSEEK_API_KEYS;
  const child = spawn(pixseek, ["--home", home, "serve", "--db", db, "--host", "127.0.0.1",
                                "--port", "0", "--import-root", importRoot, ...extraArgs],
                      { env, stdio: ["ignore", "ignore", "pipe"] });
  const log = fs.createWriteStream(path.join(artifacts, logName));
  return new Promise((resolve, reject) => {
    let text = "";
    const timer = setTimeout(() => reject(new Error("pixseek serve did not start:\n" + text)), 30000);
    child.on("exit", (code) => reject(new Error("pixseek serve exited with " + code + ":\n" + text)));
    child.stderr.on("data", (chunk) => {
      log.write(chunk);
      if (text.length < 100000) text += chunk;
      const m = /serving .* on (http:\/\/[\d.]+:\d+)/.exec(text);
      if (m) {
        clearTimeout(timer);
        resolve({ child, base: m[1], log });
      }
    });
  });
}

async function stopServer() {
  if (!server) return;
  const { child, log } = server;
  server = null;
  if (child.exitCode === null) {
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await exited;
  }
  log.end();
}

// The page of each viewport, shared by that viewport's flows in order (a
// new page load costs seconds on a busy machine; moving between views is a
// same-document navigation, as for a user).
const shared = {};
async function sharedPage(vp) {
  if (!shared[vp]) shared[vp] = await openPage(vp);
  return shared[vp].page;
}

// Fresh browser context (no stored key, no service worker) at one viewport.
async function openPage(viewportName) {
  const context = await browser.newContext({ ...VIEWPORTS[viewportName], baseURL: server.base });
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(viewportName + ": " + e.message));
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(viewportName + ": " + m.text()); });
  return { context, page };
}
const pageErrors = [];
const consoleErrors = [];

// Whole pages at desktop width; what the screen shows at phone width (and
// with a dialog open), plus the whole page as NAME-full.png when asked.
async function shot(page, name, { full = false } = {}) {
  const file = (n) => path.join(artifacts, n + ".png");
  const desktop = name.startsWith("desktop");
  await page.screenshot({ path: file(name), fullPage: desktop && full, animations: "disabled" });
  if (!desktop && full) await page.screenshot({ path: file(name + "-full"), fullPage: true, animations: "disabled" });
}

// Polls `read` until `want` accepts its value; fails with the last value seen.
async function until(read, want, what, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await read();
    if (want(last)) return last;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; last value: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const firstResultName = (page) => page.locator("#results .card .name").first().textContent({ timeout: 15000 });

async function noHorizontalScroll(page, where) {
  const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(scroll <= width, `${where}: page is ${scroll}px wide in a ${width}px viewport`);
}

async function apiMessage(method, urlPath, body) {
  const res = await fetch(server.base + urlPath, { method, body });
  return { status: res.status, json: await res.json().catch(() => null) };
}

function imageForm(filePath) {
  const form = new FormData();
  form.append("image", new Blob([fs.readFileSync(filePath)]), path.basename(filePath));
  return form;
}

before(async () => {
  fs.mkdirSync(artifacts, { recursive: true });
  for (const f of fs.readdirSync(artifacts)) fs.rmSync(path.join(artifacts, f), { force: true });
  execFileSync(fixtureBin, [work]);
  pixseekRun(["model", "import", file("tiny.onnx"), "--card", file("tiny.json"), "--name", "tiny"]);
  const report = JSON.parse(pixseekRun(["build", file("photos"), "--db", db, "--model", "tiny", "--json"]));
  assert.equal(report.indexed, 24, JSON.stringify(report));
  server = await startServer({}, "server.log");
  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox"] });
});

after(async () => {
  if (browser) await browser.close();
  await stopServer();
  fs.rmSync(work, { recursive: true, force: true });
  assert.deepEqual(pageErrors, [], "uncaught errors in the page");
});

for (const vp of Object.keys(VIEWPORTS)) {
  test(`${vp}: search by a query image shows it first, details, more like this`, async () => {
    const page = await sharedPage(vp);
    await page.goto("/#search");
    await page.getByLabel("Choose image…").setInputFiles(file("photos", "red", "r3.jpg"));
    assert.equal(await firstResultName(page), "r3.jpg");
    assert.equal(await page.locator("#query-label").textContent(), "Query: r3.jpg");
    assert.ok(await page.locator("#query-img").isVisible(), "the query image is shown");
    const first = page.locator("#results .card").first();
    assert.equal(await first.locator(".score-value").textContent(), "1.000");
    // Neighbours of a red picture are red pictures.
    const subs = await page.locator("#results .card .sub").allTextContents();
    assert.ok(subs.length >= 5, "at least five results");
    for (const s of subs.slice(0, 5)) assert.match(s, /^red/);
    // Lazy thumbnails.
    assert.equal(await first.locator("img").getAttribute("loading"), "lazy");
    // The label filter appears, since the collection has labels, and filters.
    const labelFilter = page.getByRole("combobox", { name: "Label", exact: true });
    const labels = await labelFilter.locator("option").evaluateAll((os) => os.map((o) => o.value));
    const other = labels.find((l) => l && l !== "red");
    assert.ok(other, "results carry more than one label: " + labels.join(","));
    await labelFilter.selectOption(other);
    const filtered = await page.locator("#results .card .sub").allTextContents();
    assert.ok(filtered.length > 0 && filtered.every((s) => s.startsWith(other)), filtered.join("|"));
    await labelFilter.selectOption("");
    // The predicted category shows above the results, with its confidence,
    // and the switch asks the server for that category only (all 8 reds).
    await until(() => page.locator("#category-label").textContent(), (t) => t === "red", "the predicted category");
    assert.ok(await page.locator("#category").isVisible(), "the category is shown");
    assert.match(await page.locator("#category-confidence").textContent(), /^\((\d|[1-9]\d|100)% confident\)$/);
    const only = page.getByLabel("Only this category");
    await only.check();
    await until(() => page.locator("#results .card .sub").allTextContents(),
                (subs) => subs.length === 8 && subs.every((s) => s.startsWith("red")), "only the red results");
    await only.uncheck();
    await until(() => page.locator("#results .card").count(), (n) => n === 20, "results of every category again");
    if (vp === "phone") {
      assert.ok(await page.getByText("Take photo…").isVisible(), "the camera button shows on a phone");
      assert.equal(await page.locator("#query-camera").getAttribute("capture"), "environment");
    }
    await noHorizontalScroll(page, vp + " search");
    await shot(page, vp + "-search", { full: vp === "desktop" });

    // Detail view: the full image and its metadata; Escape closes it.
    const thumb = page.getByRole("button", { name: "Details of r3.jpg" });
    await thumb.click();
    const dialog = page.locator("#detail");
    await dialog.waitFor({ state: "visible" });
    assert.equal(await page.locator("#detail-title").textContent(), "r3.jpg");
    await until(() => page.locator("#detail-img").evaluate((img) => img.complete && img.naturalWidth),
                (w) => w === 320, "the full image to load");
    const meta = await page.locator("#detail-meta").textContent();
    assert.match(meta, /320 × 240 px/);
    assert.match(meta, /red/);
    await noHorizontalScroll(page, vp + " detail");
    await shot(page, vp + "-detail");
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });
    assert.ok(await thumb.evaluate((b) => b === document.activeElement), "focus returns to the opener");

    // More like this on the second result: it becomes the query and comes first.
    const second = await page.locator("#results .card .name").nth(1).textContent();
    await page.getByRole("button", { name: "More like this: " + second }).click();
    await until(() => page.locator("#query-label").textContent(), (t) => t === "Query: " + second, "the new query");
    await until(() => firstResultName(page), (n) => n === second, "the stored image first");
  });

  test(`${vp}: upload into the library, find it, delete it`, async () => {
    const page = await sharedPage(vp);
    const name = `green-${vp}.png`;
    await page.goto("/#library");
    await page.locator("#library .card").first().waitFor();
    const before = (await apiMessage("GET", "/api/v1/stats")).json.count;
    await page.getByLabel("Choose images…").setInputFiles([file("upload", name), file("upload", "notes.png")]);
    const row = page.locator("#uploads li", { hasText: name });
    const bad = page.locator("#uploads li", { hasText: "notes.png" });
    await until(() => row.locator(".state").textContent(), (t) => t === "Stored", name + " stored");
    await until(() => bad.locator(".state").textContent(), (t) => t === "Failed", "notes.png failed");
    // The per-file error is the API's own message.
    const api = await apiMessage("POST", "/api/v1/search", imageForm(file("upload", "notes.png")));
    assert.ok(api.status >= 400 && api.json.error.message);
    assert.match(await bad.locator(".msg").textContent(), new RegExp(api.json.error.message.slice(0, 20).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
    const id = Number(/#(\d+)/.exec(await row.locator(".msg").textContent())[1]);
    // The library lists it, and the count went up by one.
    const card = page.locator(`#library .card[data-id="${id}"]`);
    await card.waitFor();
    assert.equal(await card.locator(".name").textContent(), name);
    await until(() => page.locator("#stats").textContent(), (t) => t.includes(String(before + 1)), "the new count");
    await noHorizontalScroll(page, vp + " library");
    await shot(page, vp + "-library", { full: vp === "desktop" });

    // Searching with the same picture finds the stored copy first.
    await page.getByRole("link", { name: "Search" }).click();
    await page.getByLabel("Choose image…").setInputFiles(file("upload", name));
    await until(() => firstResultName(page), (n) => n === name, "the uploaded image first");

    // Delete it, after confirming.
    await page.getByRole("link", { name: "Library" }).click();
    await page.getByRole("button", { name: "Delete: " + name }).click();
    const confirm = page.locator("#confirm");
    await confirm.waitFor({ state: "visible" });
    await shot(page, vp + "-confirm-delete");
    await confirm.getByRole("button", { name: "Delete" }).click();
    await card.waitFor({ state: "detached" });
    assert.equal((await apiMessage("GET", "/api/v1/images/" + id)).status, 404);
    await until(() => page.locator("#library-status").textContent(), (t) => t === `Deleted ${name}.`, "the deletion notice");
  });

  test(`${vp}: the duplicates block lists an edited copy and deletes it`, async () => {
    const page = await sharedPage(vp);
    // A photo and its downsized, re-saved copy (the fixture's pair of this
    // viewport), stored as a user would: the copy first.
    const name = `dup-${vp}.png`, copyName = `dup-${vp}-copy.jpg`;
    const ids = {};
    for (const n of [copyName, name]) {
      const res = await apiMessage("POST", "/api/v1/images", imageForm(file("dups", n)));
      assert.equal(res.status, 201, JSON.stringify(res.json));
      ids[n] = res.json.ids[0];
    }
    const original = ids[name], copy = ids[copyName];
    await page.goto("/#library");
    await page.getByRole("button", { name: "Find copies" }).click();
    // The pair is one group, nothing else in it, the photo first as the one
    // to keep (it has more pixels, though the copy is older).
    const group = page.locator("#dups .dup-group", { has: page.locator(`.card[data-id="${copy}"]`) });
    await group.waitFor();
    const list = group.getByRole("list", { name: "Copies of " + name });
    const cards = list.locator(".card");
    assert.deepEqual(await cards.evaluateAll((cs) => cs.map((c) => Number(c.dataset.id))), [original, copy]);
    assert.ok(await cards.first().evaluate((c) => c.classList.contains("keep")), "the photo is the one kept");
    assert.equal(await cards.first().getByRole("button", { name: /^Delete/ }).count(), 0,
                 "the one kept has no delete button");
    assert.match(await page.locator("#dups-status").textContent(), /^\d+ groups? of copies/);
    await noHorizontalScroll(page, vp + " duplicates");
    await group.scrollIntoViewIfNeeded();
    await shot(page, vp + "-duplicates", { full: vp === "desktop" });

    // Delete the copy from the block: the whole group's button at desktop
    // width, the copy's own button at phone width; each asks first.
    if (vp === "desktop") {
      await group.getByRole("button", { name: "Delete the extra copies (1)" }).click();
    } else {
      await group.getByRole("button", { name: "Delete copy: " + copyName }).click();
    }
    const confirm = page.locator("#confirm");
    await confirm.waitFor({ state: "visible" });
    await confirm.getByRole("button", { name: "Delete" }).click();
    await page.locator(`#dups .card[data-id="${copy}"]`).waitFor({ state: "detached" });
    if (vp === "desktop") await group.waitFor({ state: "detached" });
    // The copy is gone from the database, the photo stays, and the server
    // finds no copies of it any more.
    assert.equal((await apiMessage("GET", "/api/v1/images/" + copy)).status, 404);
    const kept = await apiMessage("GET", "/api/v1/images/" + original);
    assert.equal(kept.status, 200);
    assert.equal(kept.json.name, name);
    const groups = (await apiMessage("GET", "/api/v1/duplicates")).json.groups;
    assert.ok(!groups.some((g) => g.includes(original) || g.includes(copy)), JSON.stringify(groups));
  });

  test(`${vp}: start a build and watch it complete`, async () => {
    const page = await sharedPage(vp);
    await page.goto("/#builds");
    // A folder outside the import root is refused with the server's message
    // (a 403 that is not about the key: no key prompt).
    await page.getByLabel("Folder on the server").fill("/etc");
    await page.getByRole("button", { name: "Start build" }).click();
    await until(() => page.locator("#builds-status.error").count(), (n) => n === 1, "the refusal");
    assert.ok(!(await page.locator("#key-dialog").isVisible()), "no key prompt for a refused path");

    const dir = path.join(importRoot, `batch-${vp}`);
    await page.getByLabel("Folder on the server").fill(dir);
    await page.getByLabel("Folder on the server").press("Enter");
    const item = page.locator("#builds .build", { hasText: `batch-${vp}` });
    await until(() => item.locator(".build-head").textContent(), (t) => /done$/.test(t), "the build to finish", 30000);
    const figures = await item.locator(".figures").textContent();
    assert.match(figures, /Processed 7 \/ 7/);
    assert.match(figures, /Failed 2/);
    assert.match(figures, /Stored 5/);
    const failures = await item.locator(".failures li").allTextContents();
    assert.equal(failures.length, 2, failures.join("\n"));
    assert.ok(failures.some((f) => f.includes("empty.jpg")) && failures.some((f) => f.includes("readme.png")));
    for (const f of failures) assert.match(f, / — \S/, "each failure says why");
    await noHorizontalScroll(page, vp + " builds");
    await shot(page, vp + "-builds", { full: true });
  });
}

test("evaluate: a background evaluation shows its figures and PR curve", async () => {
  for (const vp of Object.keys(VIEWPORTS)) {
    const page = await sharedPage(vp);
    await page.goto("/#evaluate");
    await page.getByLabel("Labelled folder (as built)").fill(file("photos"));
    await page.getByRole("button", { name: "Evaluate" }).click();
    await page.locator("#eval-result").waitFor({ state: "visible", timeout: 30000 });
    assert.match(await page.locator("#eval-status").textContent(), /^Evaluation #\d+ done\.$/);
    // The same figures as the API's job result.
    const id = Number(/#(\d+)/.exec(await page.locator("#eval-status").textContent())[1]);
    const job = (await apiMessage("GET", "/api/v1/evaluations/" + id)).json;
    assert.equal(job.state, "done");
    const labels = Object.keys(job.result.per_label);
    assert.ok(labels.length >= 2, labels.join(","));
    assert.equal(await page.locator("#eval-classes tbody tr").count(), labels.length);
    const overall = await page.locator("#eval-summary tr.overall td").allTextContents();
    assert.equal(overall[0], String(job.result.overall.queries));
    assert.equal(overall[1], job.result.overall.map.toFixed(3));
    // Worst class first.
    const worst = labels.sort((a, b) => job.result.per_label[a].map - job.result.per_label[b].map)[0];
    assert.equal(await page.locator("#eval-classes tbody tr th").first().textContent(), worst);
    // The PR curve: two lines of 101 points and the 11-point dots.
    assert.equal(await page.locator("#eval-pr svg polyline").count(), 2);
    const points = await page.locator("#eval-pr svg polyline.overall").getAttribute("points");
    assert.equal(points.trim().split(" ").length, 101);
    assert.equal(await page.locator("#eval-pr svg circle").count(), 11);
    assert.match(await page.locator("#eval-index").textContent(), /exact top 10/);
    await noHorizontalScroll(page, vp + " evaluate");
    await shot(page, vp + "-evaluate", { full: true });
  }
});

test("desktop: drag and drop, paste, keyboard, min score, errors, offline", async () => {
  const page = await sharedPage("desktop");
  const context = page.context();
  await page.goto("/#search");
  // Keyboard: the picker is reachable with Tab and opens with Space.
  let reached = false;
  for (let i = 0; i < 12 && !reached; i++) {
    await page.keyboard.press("Tab");
    reached = await page.evaluate(() => document.activeElement.id === "query-file");
  }
  assert.ok(reached, "Tab reaches the image picker");
  // Chromium now and then drops the first keyboard activation of a file
  // input in a page that has opened a chooser before: focus it and try again
  // (Space, then Enter) before calling it a failure.
  const chooserFor = (key) =>
    Promise.all([page.waitForEvent("filechooser", { timeout: 5000 }), page.keyboard.press(key)])
      .then(([c]) => c)
      .catch(() => null);
  let chooser = await chooserFor("Space");
  for (const key of ["Space", "Enter"]) {
    if (chooser) break;
    await page.focus("#query-file");
    chooser = await chooserFor(key);
  }
  assert.ok(chooser, "the image picker opens from the keyboard");
  await chooser.setFiles(file("photos", "blue", "b1.png"));
  await until(() => firstResultName(page), (n) => n === "b1.png", "b1.png first (keyboard)");

  // Drag and drop, and paste, each carry a File like the browser's own events.
  const dispatch = (kind, name, b64) => page.evaluate(([kind, name, b64]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], name, { type: "image/jpeg" }));
    if (kind === "drop") {
      const zone = document.getElementById("query-drop");
      zone.dispatchEvent(new DragEvent("dragenter", { dataTransfer: dt, bubbles: true }));
      zone.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    } else {
      document.body.dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
    }
  }, [kind, name, b64]);
  await dispatch("drop", "y2.jpg", fs.readFileSync(file("photos", "yellow", "y2.jpg")).toString("base64"));
  await until(() => firstResultName(page), (n) => n === "y2.jpg", "y2.jpg first (drop)");
  await dispatch("paste", "r6.jpg", fs.readFileSync(file("photos", "red", "r6.jpg")).toString("base64"));
  await until(() => firstResultName(page), (n) => n === "r6.jpg", "r6.jpg first (paste)");

  // Top-k and min score go to the server. Long result lists render a page at
  // a time, the next one as the end scrolls into view.
  const total = (await apiMessage("GET", "/api/v1/stats")).json.count;
  assert.ok(total > 24 && total < 50, "the library holds " + total);
  await page.getByRole("combobox", { name: "Results", exact: true }).selectOption("50");
  await until(() => page.locator("#results .card").count(), (n) => n === 24, "the first page of results");
  await page.locator("#results-more").scrollIntoViewIfNeeded();
  await until(() => page.locator("#results .card").count(), (n) => n === total, "all results after scrolling");
  assert.ok(await page.locator("#results-more").isHidden(), "no more to show");
  await page.getByRole("combobox", { name: "Results", exact: true }).selectOption("10");
  await until(() => page.locator("#results .card").count(), (n) => n === 10, "ten results");
  await page.locator("#min-score").evaluate((input) => {
    input.value = "0.99";
    input.dispatchEvent(new Event("input"));
    input.dispatchEvent(new Event("change"));
  });
  await until(async () => (await page.locator("#results .score-value").allTextContents()).map(Number),
              (s) => s.length >= 1 && s.length < 10 && s.every((v) => v >= 0.99), "only scores >= 0.99");
  assert.equal(await page.locator("#min-score-out").textContent(), "0.99");

  // A file that is no image: the API's message, shown as an error.
  const api = await apiMessage("POST", "/api/v1/search", imageForm(file("upload", "notes.png")));
  await page.getByLabel("Choose image…").setInputFiles(file("upload", "notes.png"));
  await until(() => page.locator("#search-status.error").textContent().catch(() => ""),
              (t) => t === api.json.error.message, "the API's error message");
  assert.equal(await page.locator("#results .card").count(), 0);
  await shot(page, "desktop-search-error", { full: true });

  // The app is installable: manifest, icons, and a service worker that keeps
  // the app itself available offline.
  const manifest = await page.evaluate(async () => (await fetch("/manifest.webmanifest")).json());
  assert.equal(manifest.display, "standalone");
  for (const icon of manifest.icons) {
    const res = await fetch(server.base + icon.src);
    assert.equal(res.status, 200, icon.src);
    assert.equal(res.headers.get("content-type"), icon.type, icon.src);
  }
  await page.evaluate(() => navigator.serviceWorker.ready.then(() => true));
  await page.reload();  // now controlled by the worker, which caches the shell
  await until(() => page.evaluate(() => !!navigator.serviceWorker.controller), (c) => c, "the worker to control the page");
  await context.setOffline(true);
  await page.reload();
  await page.locator("#offline").waitFor({ state: "visible" });
  await page.getByLabel("Choose image…").setInputFiles(file("photos", "red", "r1.jpg"));
  await until(() => page.locator("#search-status.error").textContent().catch(() => ""),
              (t) => /offline/i.test(t), "the offline message");
  await shot(page, "desktop-offline");
  await context.setOffline(false);
  await page.locator("#offline").waitFor({ state: "hidden" });
});

// Write actions against a server that requires API keys.
test("API key prompt for write actions", async (t) => {
  for (const vp of Object.keys(shared)) await shared[vp].context.close();
  await stopServer();
  server = await startServer({ PIXSEEK_API_KEYS: API_KEYS.join(",") }, "server-keys.log");
  // notes.png is no image: without keys it would be refused with 415 and
  // nothing stored.
  const probe = await apiMessage("POST", "/api/v1/images", imageForm(file("upload", "notes.png")));
  if (probe.status !== 401) {
    t.skip(`the server does not require keys yet (POST without a key answered ${probe.status})`);
    return;
  }
  for (const vp of Object.keys(VIEWPORTS)) {
    const { context, page } = await openPage(vp);
    const name = `green-key-${vp}.png`;
    await page.goto("/#library");
    await page.locator("#library .card").first().waitFor();  // reads stay open
    const dialog = page.locator("#key-dialog");
    const row = page.locator("#uploads li", { hasText: name }).first();
    if (vp === "desktop") {
      // Cancelling leaves the upload failed with the server's message.
      await page.getByLabel("Choose images…").setInputFiles(file("upload", name));
      await dialog.waitFor({ state: "visible" });
      assert.equal(await page.locator("#key-title").textContent(), "API key needed");
      await page.keyboard.press("Escape");
      await until(() => row.locator(".state").textContent(), (s) => s === "Failed", "the cancelled upload to fail");
      assert.match(await row.locator(".msg").textContent(), /API key/);
    }
    // A wrong key is rejected (403) and asked for again; the right one works.
    await page.getByLabel("Choose images…").setInputFiles(file("upload", name));
    await dialog.waitFor({ state: "visible" });
    await page.getByLabel("API key", { exact: true }).fill("not-the-key");
    await page.getByLabel("API key", { exact: true }).press("Enter");
    await until(() => page.locator("#key-title").textContent(), (s) => s === "API key rejected", "the rejection");
    await dialog.waitFor({ state: "visible" });
    await noHorizontalScroll(page, vp + " key prompt");
    await shot(page, vp + "-apikey");
    await page.getByLabel("API key", { exact: true }).fill(API_KEYS[1]);
    await page.getByRole("button", { name: "Use key" }).click();
    const stored = page.locator("#uploads li.done", { hasText: name });
    await until(() => stored.count(), (n) => n === 1, name + " stored with the key");
    assert.equal(await page.evaluate(() => localStorage.getItem("pixseek.apiKey")), API_KEYS[1]);
    // The kept key serves the next write without asking.
    const id = Number(/#(\d+)/.exec(await stored.locator(".msg").textContent())[1]);
    await page.locator(`#library .card[data-id="${id}"]`).waitFor();
    await page.getByRole("button", { name: "Delete: " + name }).click();
    await page.locator("#confirm").getByRole("button", { name: "Delete" }).click();
    await page.locator(`#library .card[data-id="${id}"]`).waitFor({ state: "detached" });
    assert.ok(!(await dialog.isVisible()), "no second prompt");
    assert.equal((await apiMessage("GET", "/api/v1/images/" + id)).status, 404);
    await context.close();
  }

  // With keyed reads the reads ask for the key too, and thumbnails (which an
  // <img> cannot fetch with a key) still show.
  await stopServer();
  server = await startServer({ PIXSEEK_API_KEYS: API_KEYS.join(",") }, "server-keyed-reads.log",
                             ["--keyed-reads"]);
  const { context, page } = await openPage("phone");
  await page.goto("/#library");
  await page.locator("#key-dialog").waitFor({ state: "visible" });
  await page.getByLabel("API key", { exact: true }).fill(API_KEYS[0]);
  await page.getByLabel("API key", { exact: true }).press("Enter");
  const img = page.locator("#library .card img").first();
  await img.scrollIntoViewIfNeeded();
  await until(() => img.evaluate((i) => i.complete && i.naturalWidth), (w) => w > 0, "a thumbnail fetched with the key");
  await shot(page, "phone-keyed-reads");
  await context.close();
});
