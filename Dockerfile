# The UMLMM Pipelines code location: a gRPC code server that serves the definitions to the
# webserver and daemon, evaluates schedules and sensors, and starts the run workers
# (DefaultRunLauncher: runs execute as processes inside this container).
#
#   docker build -t umlmm-pipelines:0.1.0 .
#   # for Kubernetes (K8sRunLauncher): the run pods load the instance, which names dagster-k8s
#   docker build --build-arg EXTRA_PIP_PACKAGES="dagster-k8s==0.29.27" -t umlmm-pipelines:0.1.0-k8s .
#
# No secret is baked in: database URLs, passwords and API keys come from the environment at run time.
FROM python:3.11-slim

ARG EXTRA_PIP_PACKAGES=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

RUN groupadd --system --gid 10001 dagster \
 && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster --shell /usr/sbin/nologin dagster

WORKDIR /opt/dagster/app
# Dependencies first, at the exact versions of deploy/requirements.lock: a code change rebuilds one small layer.
COPY deploy/requirements.lock ./requirements.lock
RUN pip install -r requirements.lock
COPY pyproject.toml README.md ./
COPY umlmm_pipelines ./umlmm_pipelines
RUN pip install --no-deps . \
 && if [ -n "$EXTRA_PIP_PACKAGES" ]; then pip install -c requirements.lock $EXTRA_PIP_PACKAGES; fi \
 && pip check

# The production instance profile (environment references only) and a storage directory that
# compose shares with the webserver, so that the UI can show the runs' stdout/stderr.
COPY deploy/dagster.postgres.yaml ${DAGSTER_HOME}/dagster.yaml
RUN mkdir -p ${DAGSTER_HOME}/storage && chown -R dagster:dagster ${DAGSTER_HOME}

USER dagster
EXPOSE 4000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s \
  CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
CMD ["dagster", "code-server", "start", "-m", "umlmm_pipelines.definitions", "-h", "0.0.0.0", "-p", "4000", \
     "--location-name", "umlmm_pipelines"]
