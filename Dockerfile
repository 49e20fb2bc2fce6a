# One image for every warren service. The entrypoint is deno, so the command names the script:
#
#   docker build -t warren .
#   docker run --rm warren                                    # in-process demo, then exit
#   docker run --rm -p 127.0.0.1:1080:1080 -e DEPOT_TOKEN=... warren \
#     run --cached-only -A services/depot-server.ts --socks 0.0.0.0:1080 --metrics :9100
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

# A non-root user owns the app and Deno's cache (the cache is written when modules compile).
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin warren \
 && mkdir -p /app "$DENO_DIR" \
 && chown warren:warren /app "$DENO_DIR"
WORKDIR /app
USER warren

# npm dependencies first: this layer only changes with deno.json / deno.lock.
# EXTRA_CA_PEM: PEM text of CAs to trust while fetching them, for networks that intercept TLS.
# No file of it stays in the image, but like any build arg it shows in `docker history`: pass
# public CA certificates only, never a key.
COPY --chown=warren:warren deno.json deno.lock ./
ARG EXTRA_CA_PEM=
RUN if [ -n "$EXTRA_CA_PEM" ]; then \
      printf '%s\n' "$EXTRA_CA_PEM" > /tmp/extra-ca.pem && export DENO_CERT=/tmp/extra-ca.pem; \
    fi \
 && deno install --frozen \
 && rm -f /tmp/extra-ca.pem

# The code, then every entry point compiled into the cache so containers start offline
# (services run with --cached-only).
# (.dockerignore lets only deno.json, deno.lock, mod.ts, lib/, services/ and deploy/ in.)
COPY --chown=warren:warren . ./
RUN deno cache --frozen services/*.ts deploy/*.ts

# Healthy when the service's --metrics endpoint answers (services in compose.yaml run with
# --metrics 0.0.0.0:9100); WARREN_HEALTH_URL / WARREN_HEALTH_EXPECT refine it per service.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["deno", "run", "--cached-only", "--allow-net", "--allow-env", "/app/deploy/healthcheck.ts"]

ENTRYPOINT ["deno"]
CMD ["run", "--cached-only", "-A", "services/demo.ts"]
