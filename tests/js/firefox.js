// Debian's Firefox ESR, driven by puppeteer-core over WebDriver BiDi, for the Python
// tests: one command per stdin line, one reply per stdout line (JSON).
//   {"id": 1, "op": "newPage"}                          -> {"id": 1, "result": <page>}
//   {"id": 2, "op": "goto", "page": 0, "url": "..."}
//   {"id": 3, "op": "addScript", "page": 0, "path": "..."}
//   {"id": 4, "op": "evaluate", "page": 0, "fn": "(arg) => ...", "arg": ...}
// Page console lines and errors come as {"console": "...", "page": n}.
'use strict';

const fs = require('fs');
const readline = require('readline');
const puppeteer = require('puppeteer-core');

const FIREFOX = process.env.FIREFOX || '/usr/bin/firefox-esr';

// What a loopback-only test machine needs of Firefox's WebRTC (docs/interop.md).
const PREFS = {
  'media.navigator.streams.fake': true, // a synthetic camera and microphone
  'media.navigator.permission.disabled': true, // no getUserMedia prompt
  'media.peerconnection.ice.loopback': true, // gather host candidates on 127.0.0.1
  'media.peerconnection.ice.obfuscate_host_addresses': false, // no mDNS names
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  'media.autoplay.block-webaudio': false,
  // No sound card here: Web Audio runs on cubeb's null backend instead of staying suspended.
  'media.cubeb.force_null_context': true,
  'network.dns.disableIPv6': true,
  'app.update.enabled': false,
  'browser.shell.checkDefaultBrowser': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.enabled': false,
};

function send(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

async function main() {
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    protocol: 'webDriverBiDi',
    extraPrefsFirefox: PREFS,
  });
  const pages = [];
  send({ ready: true, version: await browser.version() });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    try {
      let result = null;
      if (command.op === 'newPage') {
        const context = await browser.createBrowserContext();
        const page = await context.newPage();
        const index = pages.push(page) - 1;
        page.on('console', (m) => send({ console: `[${m.type()}] ${m.text()}`, page: index }));
        page.on('pageerror', (e) => send({ console: `[pageerror] ${e}`, page: index }));
        result = index;
      } else if (command.op === 'goto') {
        await pages[command.page].goto(command.url);
      } else if (command.op === 'addScript') {
        await pages[command.page].addScriptTag({ content: fs.readFileSync(command.path, 'utf8') });
      } else if (command.op === 'evaluate') {
        result = await pages[command.page].evaluate(
          `(${command.fn})(${JSON.stringify(command.arg ?? null)})`,
        );
      } else {
        throw new Error(`unknown op ${command.op}`);
      }
      send({ id: command.id, result: result === undefined ? null : result });
    } catch (error) {
      send({ id: command.id, error: String(error && error.stack ? error.stack : error) });
    }
  }
  await browser.close();
}

main().catch((error) => {
  send({ fatal: String(error && error.stack ? error.stack : error) });
  process.exit(1);
});
