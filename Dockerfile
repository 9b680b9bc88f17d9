# The studio in one image, two roles (README: "Run it in Docker").
#   default:  python app.py                  the embedded Valkey, one worker per GPU it sees, the page on 7860
#   command:  python -m mochi_app serve      the web alone (CPU is enough), against MOCHI_REDIS_URL
#             python -m mochi_app worker     one worker on one GPU, against MOCHI_REDIS_URL
# The host needs only the NVIDIA driver and the NVIDIA Container Toolkit: torch's CUDA wheels bring
# the CUDA runtime with them as nvidia-* pip packages. tests/test_deploy.py holds this file to the code.
FROM python:3.11-slim

# gcc and libc6-dev: Triton compiles small C launchers the first time torch.compile runs a kernel
# on the GPU (MOCHI_COMPILE); without a compiler the worker would fall back to uncompiled blocks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

# UID 1000, as Hugging Face Spaces run containers; /data belongs to it before it becomes a volume,
# so a fresh named volume (which copies the image's folder) is writable too.
RUN useradd --create-home --uid 1000 mochi \
    && mkdir -p /data \
    && chown 1000:1000 /data

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch alone in an early layer (several GB), so neither a code change nor a requirements change
# downloads it again. Same pin as requirements.txt, whose `torch==` line it then satisfies.
# CUDA 13.0 is torch 2.13's stable CUDA build (the one PyPI also ships); it needs an NVIDIA driver
# of the 580 series or newer. For an older driver: --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0

WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt

# The code last: editing it rebuilds only this layer.
COPY app.py ./
COPY mochi_app/ mochi_app/

# HF_HOME under /data: the model weights download once into the volume, not into each new container.
# "utility" makes the NVIDIA toolkit mount nvidia-smi, which MOCHI_WORKERS=auto counts the GPUs with.
ENV MOCHI_DATA_DIR=/data \
    MOCHI_HOST=0.0.0.0 \
    MOCHI_WORKERS=auto \
    HF_HOME=/data/huggingface \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 1000:1000
VOLUME /data
EXPOSE 7860

# /healthz answers as soon as the web is up and the queue server answers; model loading is the
# workers' business and does not hold it back. A worker container has no web: disable it there
# (docker run --no-healthcheck; docker-compose.yml does).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/healthz', timeout=4)"]

CMD ["python", "app.py"]
