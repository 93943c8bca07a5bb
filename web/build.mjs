// SPDX-License-Identifier: GPL-3.0-or-later
// Dev-time build of the 4D player bundle (users need no npm): `npm ci && node build.mjs` in web/.
import { build } from "esbuild";

await build({
  entryPoints: ["src/extension.mjs"],
  bundle: true,
  format: "esm",
  minify: true,
  target: "es2022",
  outfile: "fuse4d_player.js",
  external: ["../../scripts/app.js"],
  legalComments: "eof",
  banner: { js: "// Fuse4D 4D player (GPL-3.0-or-later). Bundles three.js and @sparkjsdev/spark (MIT). Built by web/build.mjs." },
});
