# syntax=docker/dockerfile:1
# janus-bot on an NVIDIA GPU: `docker run --gpus all ... janus-bot` (README.md: "Docker"). One image for the
# bot with its web playground and for the GPU workers of docker-compose.yml; `janus-bot` is the entry point.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}
# The CUDA build of torch. Pass --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu for a CPU-only image.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
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
COPY requirements.txt /tmp/requirements.txt
# The pinned runtime requirements; the test tools (pytest, playwright, ruff, mypy) stay out of the image.
RUN pip install --index-url "$TORCH_INDEX" torch==2.13.0 \
 && grep -v -E '^(pytest|pytest-asyncio|playwright|mypy|ruff)([=<> ]|$)' /tmp/requirements.txt > /tmp/runtime.txt \
 && pip install -r /tmp/runtime.txt \
 && rm /tmp/requirements.txt /tmp/runtime.txt
COPY pyproject.toml README.md /tmp/janus-bot/
COPY bot /tmp/janus-bot/bot
COPY generator /tmp/janus-bot/generator
COPY janus_bot /tmp/janus-bot/janus_bot
RUN pip install --no-deps /tmp/janus-bot && rm -rf /tmp/janus-bot
# The settings of the default command: data in /data, the page on every interface of the container (so the
# access token in JANUS_BOT_WEB_TOKEN is required) and always on, for the health check.
COPY <<'EOF_CONFIG' /etc/janus-bot/config.toml
[bot]
data_dir = "/data"

[web]
enabled = true
host = "0.0.0.0"
port = 8080
EOF_CONFIG
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
