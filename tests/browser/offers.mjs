// Opens the decisioning example page in headless Chromium, waits for the offers Waymark
// chose, clicks the hero item (an offer, or content a journey placed), and prints what it
// saw as JSON:
//   node offers.mjs <page url>
// Chromium is Debian's (CHROMIUM, else /usr/bin/chromium); playwright-core only drives it.
import { chromium } from "playwright-core";

const url = process.argv[2];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage();
  const failures = [];
  page.on("requestfailed", (r) => failures.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  await page.goto(url);
  await page.waitForSelector("#status:has-text('decided')", { timeout: 15000 });
  const hero = await page.$eval("#hero", (el) => ({
    html: el.innerHTML,
    offers: [...el.querySelectorAll("[data-waymark-offer]")].map((e) => e.getAttribute("data-waymark-offer")),
    journeys: [...el.querySelectorAll("[data-waymark-journey]")].map((e) => e.getAttribute("data-waymark-journey")),
  }));
  const sidebar = await page.$$eval("#sidebar [data-waymark-offer]", (els) =>
    els.map((e) => ({ offer: e.getAttribute("data-waymark-offer"), text: e.textContent })));
  const status = await page.textContent("#status");
  // A click is reported once, however often the person clicks.
  const clicked = page.waitForRequest((r) => r.url().endsWith("/v1/track") && r.postData().includes("Offer Clicked"));
  await page.click("#hero > div");
  await page.click("#hero > div");
  await clicked;
  await page.waitForTimeout(300);
  console.log(JSON.stringify({ hero, sidebar, status, failures }));
} finally {
  await browser.close();
}
