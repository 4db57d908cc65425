# One image for the bot and the GPU workers of docker-compose.yml; `janus-bot` is the entry point.
FROM python:3.11-slim
WORKDIR /srv
# The CUDA build of torch, for the workers (the bot itself never imports torch). Pass
# --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu for a CPU-only image.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" torch==2.13.0 \
 && pip install --no-cache-dir -r /tmp/requirements.txt
COPY pyproject.toml README.md /tmp/janus-bot/
COPY bot /tmp/janus-bot/bot
COPY generator /tmp/janus-bot/generator
COPY janus_bot /tmp/janus-bot/janus_bot
RUN pip install --no-cache-dir --no-deps /tmp/janus-bot && rm -rf /tmp/janus-bot
ENTRYPOINT ["janus-bot"]
