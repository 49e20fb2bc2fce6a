/**
 * The status page provider of depot-server: connected exits (locals) with RTT and traffic,
 * pending requests, outcomes by reason beside the successes, recent failures; in a cluster,
 * the live instances and the exits the other instances hold.
 * @module
 */

import type { DepotClusterView } from "../cluster/depot.ts";
import type { DepotServerStatus } from "../depot/server.ts";
import type { StatusProvider, StatusSeries, StatusTable } from "./hub.ts";

/**
 * A provider over `DepotServer.status()` and, in a cluster, `DepotCluster.view()`: a SOCKS
 * client of this instance may go through an exit another one holds, so the page shows which.
 */
export function depotStatusProvider(
  status: () => DepotServerStatus,
  cluster?: () => DepotClusterView,
): StatusProvider {
  return () => {
    const s = status();
    const c = cluster?.();
    const series: StatusSeries[] = [
      { chart: "connections", name: "active", value: s.active },
      { chart: "connections", name: "pending", value: s.pending },
      { chart: "bytes/s", name: "up (client\u2192target)", value: s.bytesUp, kind: "rate" },
      { chart: "bytes/s", name: "down (target\u2192client)", value: s.bytesDown, kind: "rate" },
      { chart: "requests/s", name: "ok", value: s.total, kind: "rate" },
    ];
    const reasons = Object.entries(s.failuresByReason).sort((a, b) => b[1] - a[1]);
    for (const [reason, n] of reasons) {
      series.push({ chart: "requests/s", name: reason, value: n, kind: "rate" });
    }
    for (const e of s.exits) {
      if (e.rttMs !== null) series.push({ chart: "exit RTT ms", name: e.name, value: e.rttMs });
    }
    return {
      tables: [...(c ? clusterTables(c) : []), {
        title: "exits",
        columns: ["name", "remote", "since", "RTT ms", "active", "total", "failures", "up", "down"],
        rows: s.exits.map((e) => [
          e.name + (e.name === s.defaultExit ? " (default)" : ""),
          e.remote,
          e.connectedSince,
          e.rttMs,
          e.active,
          e.total,
          e.failures,
          e.bytesUp,
          e.bytesDown,
        ]),
      }, {
        title: "totals",
        columns: ["active", "total", "pending", "mux sessions", "failures", "up", "down"],
        rows: [[s.active, s.total, s.pending, s.muxSessions, s.failures, s.bytesUp, s.bytesDown]],
      }, {
        title: "outcomes",
        columns: ["outcome", "requests"],
        rows: [["ok", s.total], ...reasons],
      }, {
        title: "recent failures",
        columns: ["at", "exit", "dest", "reason", "message"],
        rows: s.recentFailures.slice(-20).reverse().map((f) => [
          f.at,
          f.exit,
          f.dest,
          f.reason,
          f.message ?? "",
        ]),
      }],
      series,
    };
  };
}

/** The cluster's tables: its instances (and whether Redis answers), the exits held elsewhere. */
function clusterTables(c: DepotClusterView): StatusTable[] {
  return [
    {
      title: "instances",
      columns: ["instance", "advertise", "since", "exits", "this one"],
      rows: c.instances.map((i) => [i.name, i.advertise, i.since, i.exits, i.self]),
    },
    {
      title: "exits elsewhere",
      columns: ["name", "instance"],
      rows: c.exitsElsewhere.map((e) => [e.name, e.instance]),
    },
    ...(c.registryUp ? [] : [{
      title: "registry",
      columns: ["state"],
      rows: [["unreachable: the instances and exits as last read"]],
    }]),
  ];
}
