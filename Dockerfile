# thawd: build and test on Debian 12, then a slim non-root runtime image.
# Keep the package list in step with scripts/setup.sh (the build stage runs that script; it
# also installs nodejs and npm, which the integration suite uses to lint the OpenAPI spec and
# validate every response against it; offline, those two tests skip).

FROM debian:12 AS build
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN sh scripts/setup.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN meson setup /build --buildtype=release \
 && meson compile -C /build \
 && meson test -C /build --print-errorlogs --suite unit --suite kernels --suite integration

FROM debian:12-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libmicrohttpd12 libjansson4 libopenblas0-pthread libsqlite3-0 zlib1g curl \
      libpng16-16 libjpeg62-turbo \
      dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data thawd \
 && mkdir -p /data && chown thawd /data
COPY --from=build /build/server/thawd /usr/local/bin/thawd
USER thawd
VOLUME /data
EXPOSE 8080
# The engine runs its own compute threads (--blas-threads, default cores / workers) over
# single-threaded OpenBLAS, so OpenBLAS need not start a pool of its own.
# Listening on all interfaces requires a token: create one first, on the same volume:
#   docker run --rm -v thawd-data:/data thawd token create --name me --scope read,submit
ENV OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 THAWD_DATA_DIR=/data THAWD_HOST=0.0.0.0
HEALTHCHECK --interval=30s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/thawd"]
CMD ["serve"]
