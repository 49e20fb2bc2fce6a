/**
 * `deno task bench [area ...]`: run the benchmarks in bench/ one after another (default:
 * every bench/<area>.ts but the soak, which has its own `deno task soak`), each printing its
 * own table of ratios to direct TCP.
 */

const here = new URL(".", import.meta.url).pathname;
const available = [...Deno.readDirSync(here)]
  .filter((e) =>
    e.isFile && e.name.endsWith(".ts") && e.name !== "run.ts" && !e.name.startsWith("_")
  )
  .map((e) => e.name.slice(0, -3))
  .sort();
/** Long-running load tests with their own task, left out of the default run. */
const notByDefault = ["soak"];
const wanted = Deno.args.length > 0
  ? Deno.args
  : available.filter((a) => !notByDefault.includes(a));
let failed = 0;
for (const area of wanted) {
  if (!available.includes(area)) {
    console.error(`error: no benchmark "${area}" (have: ${available.join(", ")})`);
    Deno.exit(2);
  }
  console.log(`\n## ${area}\n`);
  const { code } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-net", `${here}${area}.ts`], // quic.ts: Deno QUIC
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (code !== 0) {
    console.error(`bench ${area} exited with ${code}`);
    failed++;
  }
}
Deno.exit(failed > 0 ? 1 : 0);
