# weft container image: the compiled single executable on Debian slim.
# Build:  docker build -t weft:0.1.0 .
# Run:    docker run --rm --net=host --cap-add NET_ADMIN --cap-add NET_RAW \
#           -v /run/flannel:/run/flannel -v /var/lib/weft:/var/lib/weft weft:0.1.0 --iface eth0
# (Kubernetes: see deploy/weft-daemonset.yaml.)

# --- build: compile weft with the official Deno image (it downloads denort as deno compile needs)
FROM denoland/deno:debian-2.9.6 AS build
WORKDIR /src
COPY deno.json deno.lock ./
COPY main.ts ./
COPY src ./src
COPY ffi ./ffi
RUN deno install --frozen --entrypoint main.ts \
 && deno task compile --output /out/weft \
 && /out/weft version

# --- runtime: only what weft loads or runs at run time
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnl-3-200 libnl-route-3-200 iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/weft /usr/bin/weft
# The CNI plugin is the same executable under another name (copy it to /opt/cni/bin on the host).
RUN ln -s /usr/bin/weft /usr/bin/weft-cni
# Needs root with NET_ADMIN (and NET_RAW for iptables) in the host network namespace.
USER root
ENTRYPOINT ["/usr/bin/weft"]
CMD ["run"]
