# syntax=docker/dockerfile:1
# janus-bot in a container (README.md: "Deploying"). One image for the bot with its web playground and for the
# GPU workers of docker-compose.yml; `janus-bot` is the entry point.
#   docker build -t janus-bot:0.1.0 .                          CUDA (torch's cu128 build), for `docker run --gpus all`
#   docker build -t janus-bot:0.1.0-cpu --build-arg BASE_IMAGE=debian:bookworm-slim --build-arg TORCH=cpu .
# Behind a TLS-inspecting proxy pip needs a CA bundle with the proxy's CA (the whole bundle: it replaces pip's),
# and wheels already on the machine (a torch wheel, a mirror's files) save downloads; buildah and podman mount
# both for the build only (docker build has no --volume: give it the bundle as a secret, same PIP_CERT):
#   buildah build --volume /etc/ssl/certs/ca-certificates.crt:/run/pip-cert.pem:ro \
#                 --build-arg PIP_CERT=/run/pip-cert.pem \
#                 --volume /opt/wheels:/run/wheels:ro --build-arg PIP_FIND_LINKS=/run/wheels ...
#   docker build --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt \
#                --build-arg PIP_CERT=/run/secrets/pip-cert ...
# Any base with Debian's or Ubuntu's python3 (3.11 or newer) and apt works. The digest pins the default one
# exactly (a tag can be pushed again); the tag says which it is.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04@sha256:ebef3c171eeef0298e4eb2e4be843105edf3b8b0ac45e0b43acee358e8046867
FROM ${BASE_IMAGE}
# torch's build: "cpu", or a CUDA build scripts/torch_choice.py knows (cu126, cu128, cu130), which needs a host
# driver supporting that CUDA version (nvidia-smi's "CUDA Version").
ARG TORCH=cu128
# Paths inside the build (mounted with --volume or --secret), read by pip from its environment; empty: not used.
ARG PIP_CERT=
ARG PIP_FIND_LINKS=
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    HF_HOME=/cache/huggingface JANUS_BOT_CACHE=/cache/janus-bot \
    TORCHINDUCTOR_CACHE_DIR=/cache/torchinductor TRITON_CACHE_DIR=/cache/triton
# g++ and python3-dev: `[generator] compile = true` builds kernels at start (Triton's launcher is a C
# extension; inductor's CPU kernels are C++), cached in /cache so that a restart reuses them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
COPY requirements.txt scripts/torch_choice.py /tmp/build/
# torch as scripts/install takes it: the build torch_choice.py names for TORCH (its version, its index), from
# where pip already looks (PIP_FIND_LINKS, PyPI) if it is there, else from PyTorch's index. Then the pinned
# runtime requirements, torch's dependencies with them; the test tools (pytest, playwright, ruff, mypy) stay out.
RUN --mount=type=secret,id=pip-cert,target=/run/secrets/pip-cert \
    cd /tmp/build \
 && python3 -c 'import platform, sys, torch_choice as t; build = sys.argv[1]; \
cuda = {name: needs for needs, name in t.CUDA_BUILDS}; \
build in cuda or build == "cpu" or sys.exit(f"TORCH={build}: give cpu or one of {sorted(cuda)}"); \
machine = t.Machine(platform.system(), platform.machine(), build != "cpu", cuda.get(build)); \
print("\n".join(t.choose(machine, "cpu" if build == "cpu" else "cuda").pip))' "$TORCH" > torch-args \
 && set -- $(cat torch-args) \
 && echo "torch: $*" \
 && { pip install --quiet --no-deps "$1" 2>/dev/null || pip install --no-deps "$@"; } \
 && grep -v -E '^(pytest|pytest-asyncio|playwright|mypy|ruff)([=<> ]|$)' requirements.txt > runtime.txt \
 && pip install -r runtime.txt \
 && cd / && rm -rf /tmp/build
COPY pyproject.toml README.md /tmp/janus-bot/
COPY bot /tmp/janus-bot/bot
COPY generator /tmp/janus-bot/generator
COPY janus_bot /tmp/janus-bot/janus_bot
RUN --mount=type=secret,id=pip-cert,target=/run/secrets/pip-cert \
    pip install --no-deps /tmp/janus-bot && rm -rf /tmp/janus-bot
# The settings of the default command: data in /data, the page on every interface of the container (so the
# access token in JANUS_BOT_WEB_TOKEN is required) and always on, for the health check. Mount your own file
# over it to change settings (keep these five lines).
RUN mkdir -p /etc/janus-bot \
 && printf '%s\n' '[bot]' 'data_dir = "/data"' '' '[web]' 'enabled = true' 'host = "0.0.0.0"' 'port = 8080' \
    > /etc/janus-bot/config.toml
# A fixed uid (10001), so that a bind mount can be given to it: chown 10001:10001 the host's directory.
RUN useradd --create-home --uid 10001 janus \
 && mkdir -p /data /cache /srv \
 && chown janus:janus /data /cache /srv
USER janus
WORKDIR /srv
VOLUME ["/data", "/cache"]
EXPOSE 8080
# Loading a large model takes minutes on first start (downloads go to /cache).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["janus-bot"]
CMD ["run", "--config", "/etc/janus-bot/config.toml"]
