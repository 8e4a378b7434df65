# syntax=docker/dockerfile:1
# One image for every claimflow service in docker-compose.yml (trainer, model, scorer,
# gateway, producer) and for the MLflow tracking server. Build: `docker compose build`.
#
# Dependencies are the runtime set of pyproject.toml pinned by requirements.lock (the dev
# extras such as pytest, selenium and mypy stay out of the image).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_NO_CACHE=1
RUN python -m venv /opt/venv && /opt/venv/bin/pip install -q "uv==0.13.9"
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock or the project metadata change.
COPY pyproject.toml requirements.lock ./
RUN /opt/venv/bin/uv pip install --python /opt/venv/bin/python -q \
        -r pyproject.toml -c requirements.lock
COPY README.md ./
COPY claimflow ./claimflow
COPY schemas ./schemas
COPY features ./features
COPY modelstore ./modelstore
COPY scoring ./scoring
COPY producer ./producer
COPY trainer ./trainer
COPY scorer ./scorer
COPY gateway ./gateway
COPY broker ./broker
RUN /opt/venv/bin/uv pip install --python /opt/venv/bin/python -q --no-deps . \
    && /opt/venv/bin/python -m pip check

FROM ${PYTHON_IMAGE}
# The state folders exist in the image, owned by the service user, so that named volumes
# mounted on them start with that ownership (Docker and podman copy it into new volumes).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin claimflow \
    && mkdir -p /data/mlflow /data/bentoml /data/gateway /data/datasets /data/logs \
    && chown -R claimflow:claimflow /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CLAIMFLOW_HOME=/data \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    BENTOML_DO_NOT_TRACK=true \
    TQDM_DISABLE=1
USER claimflow
WORKDIR /data
EXPOSE 3000 5000 5005
ENTRYPOINT ["claimflow"]
CMD ["--help"]
