import { allowList, PolicyError } from "../lib/depot/mod.ts";
import { assert, assertThrows } from "./_assert.ts";

Deno.test("depot policy: allow patterns match host globs and port ranges", () => {
  const allow = allowList([
    "*.corp.example:443",
    "10.1.*:8000-8999",
    "Intranet",
    "[::1]:22",
    "db.local:*",
  ]);
  assert(allow({ host: "git.corp.example", port: 443 }));
  assert(allow({ host: "GIT.Corp.Example", port: 443 }));
  assert(!allow({ host: "corp.example", port: 443 }));
  assert(!allow({ host: "git.corp.example", port: 80 }));
  assert(!allow({ host: "git.corp.example.evil", port: 443 }));
  assert(allow({ host: "10.1.2.3", port: 8080 }));
  assert(!allow({ host: "10.1.2.3", port: 9000 }));
  assert(!allow({ host: "110.1.2.3", port: 8080 }));
  assert(allow({ host: "intranet", port: 1 }));
  assert(allow({ host: "::1", port: 22 }));
  assert(!allow({ host: "::1", port: 23 }));
  assert(allow({ host: "db.local", port: 5432 }));
  assert(allowList([])({ host: "anything", port: 1 }));
});

Deno.test("depot policy: malformed patterns are rejected", () => {
  for (const bad of ["", "host:", "host:99999", "host:9-1", "a:b:c", "[::1"]) {
    const err = assertThrows(() => allowList([bad]), bad);
    assert(err instanceof PolicyError, `${bad}: ${err}`);
  }
});
