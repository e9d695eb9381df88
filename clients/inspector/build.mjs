// Bundles src/inspector.ts with the SDK's source (not its dist: no build of the SDK needed) into
// app/inspector/static/inspector.js, which is committed: the service serves it without npm. The test
// (test/inspector.test.mjs) builds it again in memory and requires the same bytes, so it cannot drift.
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const OUTPUT = path.resolve(HERE, "../../app/inspector/static/inspector.js");

/** The bundle's text. Relative to this directory, whatever the caller's working directory: the same bytes
 * on every machine with the locked esbuild. */
export async function bundle() {
  const result = await build({
    absWorkingDir: HERE,
    entryPoints: ["src/inspector.ts"],
    bundle: true,
    write: false,
    format: "esm",
    target: "es2020",
    charset: "utf8",
    legalComments: "none",
    banner: { js: "// Built by clients/inspector (npm run build) from its src/ and the SDK's: do not edit." },
    alias: { "@fluxbase-realtime/client": path.join(HERE, "../typescript/src/index.ts") },
    logLevel: "warning",
  });
  return result.outputFiles[0].text;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await writeFile(OUTPUT, await bundle());
  console.log(`wrote ${path.relative(process.cwd(), OUTPUT)}`);
}
