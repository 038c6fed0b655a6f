# The image Kubeflow runs every component in (pipeline.image, or compile-kubeflow --image):
# Python 3.10, the pinned lock installed with uv, this package (Transform and Trainer are
# import paths of it) with the shipped configs, and `funnelrank` as the entry point.
# Build and push (README, "Kubeflow"):
#
#   docker build --platform linux/amd64 -t REGISTRY/funnelrank:0.1.0 .
#   docker push REGISTRY/funnelrank:0.1.0

# ---- build: a venv with the lock and the package (a C++ compiler for the one sdist,
#      pyfarmhash, that tf.Transform pulls in and that has no wheel for Python 3.10)
FROM python:3.10-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
# uv installs the ~280 pinned packages in seconds (pip's resolver backtracks for 15+ min).
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_NO_CACHE=1
# --seed: pip in the venv (TFX installs user-module wheels with `python -m pip`).
RUN uv venv --seed --python /usr/local/bin/python3.10 /opt/venv
# The lock first: this layer is reused while only the project's code changes.
COPY requirements/lock.txt /src/requirements/lock.txt
RUN uv pip install --python /opt/venv/bin/python -r /src/requirements/lock.txt
COPY setup.py MANIFEST.in /src/
COPY configs/ /src/configs/
COPY funnelrank/ /src/funnelrank/
COPY pipeline/ /src/pipeline/
COPY schemas/ /src/schemas/
COPY serving/ /src/serving/
COPY trainer/ /src/trainer/
COPY transform/ /src/transform/
# Not editable: the package goes to site-packages, the configs with it (funnelrank/configs).
RUN uv pip install --python /opt/venv/bin/python --no-deps /src

# ---- runtime: the venv alone (no compiler, no sources)
FROM python:3.10-slim
# TF_USE_LEGACY_KERAS must be set before TensorFlow is imported, and Kubeflow starts each
# component with `python -m tfx...`, which imports TensorFlow before any of our code runs.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2
COPY --from=build /opt/venv /opt/venv
# Fail the build, not the first pipeline run, if the install is incomplete.
RUN cd / && funnelrank --version \
    && python -c "from schemas import config; config.load('synthetic_mmoe')" \
    && python -c "import tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor, trainer.tfx_trainer, transform.preprocessing"
WORKDIR /work
# Kubeflow replaces the entry point with its executor command; `docker run IMAGE train ...`
# runs the CLI.
ENTRYPOINT ["funnelrank"]
CMD ["--help"]
