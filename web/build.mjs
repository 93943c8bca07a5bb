// SPDX-License-Identifier: GPL-3.0-or-later
// Dev-time build of the 4D player bundle (users need no npm): `npm ci && node build.mjs` in web/.
// The banner records a SHA-256 of the sources and the lock file; a test checks that the committed
// bundle was built from the committed sources.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { build } from "esbuild";

export function sourceDigest() {
  const hash = createHash("sha256");
  const files = readdirSync("src").filter((f) => f.endsWith(".mjs")).sort().map((f) => `src/${f}`);
  for (const file of [...files, "package-lock.json"]) {
    hash.update(file + "\n");
    hash.update(readFileSync(file));
    hash.update("\n");
  }
  return hash.digest("hex");
}

await build({
  entryPoints: ["src/extension.mjs"],
  bundle: true,
  format: "esm",
  minify: true,
  target: "es2022",
  outfile: "fuse4d_player.js",
  external: ["../../scripts/app.js"],
  legalComments: "eof",
  banner: {
    js: "// SPDX-License-Identifier: GPL-3.0-or-later\n// Fuse4D 4D player. Bundles three.js and @sparkjsdev/spark (MIT). Built by web/build.mjs.\n"
      + `// fuse4d-sources-sha256: ${sourceDigest()}`,
  },
});
