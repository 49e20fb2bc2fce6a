/**
 * Generic providers: any JSON status object as tables, and the process's listeners (every
 * lib/net serve() loop) with their connection counts.
 * @module
 */

import { formatAddr, liveServers } from "../net/serve.ts";
import type { StatusProvider, StatusSeries, StatusTable } from "./hub.ts";

type Cell = string | number | boolean | null;

function cell(v: unknown): Cell {
  if (v === null || v === undefined) return null;
  if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") return v;
  return JSON.stringify(v);
}

/**
 * Tables from a status object: its scalar fields as one "summary" table, each array of
 * objects as a table whose columns are the union of their keys, nested objects flattened
 * one level into the summary. Numeric top-level fields are charted as gauges under "status".
 */
export function jsonStatusProvider(status: () => unknown | Promise<unknown>): StatusProvider {
  return async () => {
    const s = await status();
    if (s === null || typeof s !== "object" || Array.isArray(s)) {
      return { tables: [{ title: "status", columns: ["value"], rows: [[cell(s)]] }] };
    }
    const summary: Cell[][] = [];
    const tables: StatusTable[] = [];
    const series: StatusSeries[] = [];
    for (const [k, v] of Object.entries(s)) {
      if (Array.isArray(v) && v.every((x) => x !== null && typeof x === "object")) {
        const columns = [...new Set(v.flatMap((x) => Object.keys(x as object)))];
        tables.push({
          title: k,
          columns,
          rows: v.slice(0, 200).map((x) =>
            columns.map((c) => cell((x as Record<string, unknown>)[c]))
          ),
        });
      } else if (v !== null && typeof v === "object" && !Array.isArray(v)) {
        for (const [k2, v2] of Object.entries(v)) summary.push([`${k}.${k2}`, cell(v2)]);
      } else {
        summary.push([k, cell(v)]);
        if (typeof v === "number" && Number.isFinite(v) && !/ms$|since|At$/i.test(k)) {
          series.push({ chart: "status", name: k, value: v });
        }
      }
    }
    return {
      tables: [{ title: "summary", columns: ["field", "value"], rows: summary }, ...tables],
      series,
    };
  };
}

/** The process's listeners: name, address, connections now and since start, refusals. */
export function listenersStatusProvider(): StatusProvider {
  return () => {
    const list = [...liveServers];
    return {
      tables: [{
        title: "listeners",
        columns: [
          "name",
          "addr",
          "active",
          "total",
          "over limit",
          "shed",
          "handshake timeouts",
          "errors",
        ],
        rows: list.map((s) => [
          s.name ?? "",
          formatAddr(s.addr),
          s.stats.active,
          s.stats.total,
          s.stats.rejected,
          s.stats.shed ?? 0,
          s.stats.handshakeTimeouts,
          s.stats.errors,
        ]),
      }],
      series: list.map((s) => ({
        chart: "connections per listener",
        name: s.name ?? formatAddr(s.addr),
        value: s.stats.active,
      })),
    };
  };
}
