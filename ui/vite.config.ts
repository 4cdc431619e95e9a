// Builds the UI into the Python package (src/peeps/web/static/), committed like
// pyinstrument's HTML renderer bundle so `pip install peeps` never needs Node.
// File names carry no content hash: the bundle must rebuild byte-for-byte so
// scripts/check-ui-bundle can diff it against the committed copy.
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = fileURLToPath(new URL(".", import.meta.url));
const outDir = process.env.PEEPS_UI_OUT_DIR
  ? resolve(process.env.PEEPS_UI_OUT_DIR)
  : resolve(here, "../src/peeps/web/static");

// `npm run dev` serves the UI with hot reload and forwards the API to a running
// peeps-web (PEEPS_HTTP, default 127.0.0.1:9120).
const api = `http://${process.env.PEEPS_HTTP ?? "127.0.0.1:9120"}`;

export default defineConfig({
  root: here,
  base: "./",
  server: {
    proxy: { "/api": api, "/health": api },
  },
  worker: {
    format: "es",
    rolldownOptions: {
      output: {
        entryFileNames: "assets/[name].js",
        chunkFileNames: "assets/[name].js",
        assetFileNames: "assets/[name][extname]",
      },
    },
  },
  build: {
    outDir,
    emptyOutDir: true,
    sourcemap: false,
    target: "es2022",
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    rolldownOptions: {
      output: {
        entryFileNames: "assets/[name].js",
        chunkFileNames: "assets/[name].js",
        assetFileNames: "assets/[name][extname]",
      },
    },
  },
});
