# kiam image: one image for `kiam agent` and `kiam server` (as Go Kiam ships).
# Build: docker build -t kiam:dev .
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
# The product only: the test bed (testbed/) and its moto/boto3 stay out;
# tests/test_packaging.py builds the wheel from exactly these files and lists it.
COPY pyproject.toml README.md ./
COPY kiam ./kiam
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim-bookworm
# iptables for the agent's --iptables (the nft backend works on current kernels);
# iproute2 (`ip`) for the interface of --token-credentials
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /install /usr/local
# Go Kiam's image is the one binary /kiam: its chart and manifests say
# `command: [/kiam, agent]` and probe with `/kiam health ...`, which override ENTRYPOINT.
# The same program answers to both names (docs/MIGRATING.md).
RUN ln -s /usr/local/bin/kiam /kiam
# The agent runs as root (hostNetwork + NET_ADMIN for the DNAT rule); the server does
# not need root: its manifest sets runAsUser.
ENTRYPOINT ["kiam"]
CMD ["--help"]
