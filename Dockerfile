# One image for every warren service, each on PATH under its own name with only the Deno
# permissions it needs (tools/install.ts --shims): the command names the service.
#
#   docker build -t warren .
#   docker run --rm warren                                    # in-process demo, then exit
#   docker run --rm -p 127.0.0.1:1080:1080 -e DEPOT_TOKEN=... warren \
#     depot-server --socks 0.0.0.0:1080 --metrics 0.0.0.0:9100
#
# BASE is the official Deno image of the Deno version warren is tested with. Offline (CI) it
# is a local image with the same Deno binary: see tests/docker_stack_test.ts.
# Build steps fetch npm packages (deno.lock pins them); without a bridge route to the registry
# build with `docker build --network host .`.
ARG BASE=denoland/deno:2.9.6
FROM ${BASE}

ENV DENO_DIR=/var/cache/deno \
    DENO_NO_UPDATE_CHECK=1 \
    DENO_NO_PROMPT=1 \
    WARREN_HEALTH_URL=http://127.0.0.1:9100/metrics

# The runtime user owns nothing: the code, the launchers and Deno's cache belong to root and
# are read-only to it (Deno keeps its run-time caches in memory when it cannot write them).
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin warren
WORKDIR /app

# (.dockerignore lets only deno.json, deno.lock, mod.ts, lib/, services/, deploy/ and the two
# tools below in.)
COPY . ./

# Only what the services import is cached: tools/runtime_lock.ts drops the packages only tests
# use (fast-check, playwright-core, socks) from the image's deno.lock, every other version
# pinned as committed, and each entry point is compiled into the cache against it (--frozen)
# so containers start offline (--cached-only).
# EXTRA_CA_PEM: PEM text of CAs to trust while fetching, for networks that intercept TLS. No
# file of it stays in the image, but like any build arg it shows in `docker history`: pass
# public CA certificates only, never a key.
ARG EXTRA_CA_PEM=
# INSTALL_FLAGS: more tools/install.ts flags; `--workers` lets seaprox, depot-server and
# tunnel-server run --workers N (README, Install).
ARG INSTALL_FLAGS=
RUN deno run --allow-read=. --allow-write=deno.lock tools/runtime_lock.ts \
 && if [ -n "$EXTRA_CA_PEM" ]; then \
      printf '%s\n' "$EXTRA_CA_PEM" > /tmp/extra-ca.pem && export DENO_CERT=/tmp/extra-ca.pem; \
    fi \
 && deno cache --frozen services/*.ts deploy/*.ts \
 && rm -f /tmp/extra-ca.pem \
 && deno run --allow-read --allow-write=/usr/local/bin --allow-env tools/install.ts --shims \
      --root /usr/local --read /app/deploy,/etc/warren,/run/secrets $INSTALL_FLAGS \
 && chmod -R go-w /app "$DENO_DIR"

USER warren

# Healthy when the service's --metrics endpoint answers (services in compose.yaml run with
# --metrics 0.0.0.0:9100); WARREN_HEALTH_URL / WARREN_HEALTH_EXPECT refine it per service.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["deno", "run", "--cached-only", "--allow-net=127.0.0.1", \
       "--allow-env=WARREN_HEALTH_URL,WARREN_HEALTH_EXPECT", "/app/deploy/healthcheck.ts"]

ENTRYPOINT []
CMD ["deno", "run", "--cached-only", "--allow-net", "--allow-env=WARREN_*", "services/demo.ts"]
