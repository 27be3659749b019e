// Vite build of the leotwin dashboard. The output is committed under the Python package
// (src/leotwin/service/static/) so that `pip install` needs no Node; the FastAPI app serves it
// at `/`. A relative base keeps every asset URL `./assets/...`.
import { defineConfig } from "vite";

export default defineConfig({
  base: "./",
  build: {
    outDir: "../src/leotwin/service/static",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 1200,
    rollupOptions: {
      output: {
        manualChunks(id) {
          if (id.includes("node_modules/maplibre-gl")) return "maplibre";
          return undefined;
        },
      },
    },
  },
  server: {
    // `npm run dev` proxies the API to a running `leotwin serve` (default port 8000).
    proxy: { "/api": process.env.LEOTWIN_API ?? "http://127.0.0.1:8000" },
  },
});
