# nats-callout: the host binary and the built-in plugins in a small non-root image.
# Configuration, seeds and extra plugins are mounted as files at run time:
#   /etc/nats-callout/config.yaml   the config (`nats-callout check` validates it)
#   seeds                           files named in the config, or AUTH_CALLOUT_*_SEED
#   extra plugins                   any path outside /plugins, listed in `plugins:`
#
#   docker build -t nats-callout .
#   docker run -v /srv/nats-callout:/etc/nats-callout:ro -p 9090:9090 nats-callout

# The toolchain rust-toolchain.toml pins (rustc 1.97: wasmtime 50 needs it).
FROM rust:1.97-slim-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
# The host for the image's platform, the plugins for wasm32-wasip2 with the size- and
# speed-optimised `plugin` profile, laid out as <mode>.wasm like scripts/setup does; the
# one that sends HTTP requests apart (scripts/setup says why).
RUN cargo build --locked --release -p nats-callout --bin nats-callout \
 && cargo build --locked --target wasm32-wasip2 --profile plugin \
      -p nats-callout-plugin-oauth2 -p nats-callout-plugin-mtls \
      -p nats-callout-plugin-nkey -p nats-callout-plugin-noauth \
      -p nats-callout-plugin-password -p nats-callout-plugin-jwt \
 && cargo build --locked --target wasm32-wasip2 --profile plugin \
      -p nats-callout-plugin-introspection \
 && mkdir -p /out/plugins \
 && cp target/release/nats-callout /out/nats-callout \
 && for p in oauth2 mtls nkey noauth password jwt introspection; do \
      cp "target/wasm32-wasip2/plugin/nats_callout_plugin_$p.wasm" "/out/plugins/$p.wasm"; \
    done

# glibc, libgcc and CA certificates (JWKS over https), no shell; the same Debian release
# as the builder, so the binary's glibc matches.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/nats-callout /usr/local/bin/nats-callout
COPY --from=build /out/plugins/ /plugins/
ENV AUTH_CALLOUT_PLUGIN_DIR=/plugins
USER 65532:65532
# /metrics, /healthz, /readyz (config key http_listen, default 0.0.0.0:9090)
EXPOSE 9090
ENTRYPOINT ["nats-callout"]
CMD ["run", "--config", "/etc/nats-callout/config.yaml"]
