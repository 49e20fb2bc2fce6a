/**
 * The status page's uPlot files are part of the program, not read from node_modules at run
 * time: a copy of lib/ and services/ with no node_modules beside it, run with
 * `--node-modules-dir=none`, serves uPlot's JS and CSS (the charts) byte for byte.
 */

import { assert, assertEquals } from "./_assert.ts";
import { startService } from "./_util.ts";

const root = new URL("../", import.meta.url);

async function copyTree(from: URL, to: URL): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyTree(new URL(`${e.name}/`, from), new URL(`${e.name}/`, to));
    else if (e.isFile) await Deno.copyFile(new URL(e.name, from), new URL(e.name, to));
  }
}

/** uPlot's file as the npm package ships it (resolved through Deno's npm support). */
async function shipped(file: string): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import t from "npm:uplot@1.6.32/dist/${file}" with { type: "text" };
      await Deno.stdout.write(new TextEncoder().encode(t));`,
    ],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}

Deno.test("status page: uPlot is served with --node-modules-dir=none and no node_modules", async () => {
  const tree = new URL(`file://${await Deno.makeTempDir({ prefix: "warren-no-node-modules-" })}/`);
  try {
    for (const dir of ["lib", "services"]) {
      await copyTree(new URL(`${dir}/`, root), new URL(`${dir}/`, tree));
    }
    for (const f of ["deno.json", "deno.lock"]) {
      await Deno.copyFile(new URL(f, root), new URL(f, tree));
    }
    const svc = await startService("seaprox.ts", [
      ...["--listen", "static://127.0.0.1:0?to=127.0.0.1:9", "--metrics", "127.0.0.1:0"],
    ], { root: tree, denoArgs: ["--node-modules-dir=none"] });
    try {
      await Deno.stat(new URL("node_modules", tree)).then(
        () => assert(false, "no node_modules was made"),
        (err) => assert(err instanceof Deno.errors.NotFound),
      );
      const line = await svc.waitFor(/msg="metrics listening"/);
      const base = `http://${/addr=(\S+)/.exec(line)![1]}`;
      const page = await (await fetch(`${base}/`)).text();
      assert(page.includes(`src="/status/ui/uplot.js"`), "the page loads uPlot from the service");
      for (
        const [path, file, type] of [
          ["/status/ui/uplot.js", "uPlot.iife.min.js", "text/javascript"],
          ["/status/ui/uplot.css", "uPlot.min.css", "text/css"],
        ]
      ) {
        const res = await fetch(`${base}${path}`);
        const body = await res.text();
        assertEquals(res.status, 200, `${path}: ${body.slice(0, 80)}`);
        assert(res.headers.get("content-type")?.startsWith(type), `${path} content-type`);
        assert(body === await shipped(file), `${path} is uPlot's ${file}`);
      }
    } finally {
      await svc.stop();
    }
  } finally {
    await Deno.remove(tree, { recursive: true });
  }
});
