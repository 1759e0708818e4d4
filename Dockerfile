# The product image: every process of Workload Scheduler is `wsched <command>`.
#   docker build -t workload-scheduler .
#   docker run workload-scheduler api | scheduler | worker | executor | db upgrade
# The API's Helm deployer runs helm: the same version our tests pin (services/infra/helm.py).
FROM alpine/helm:3.19.5 AS helm

FROM python:3.11-slim

COPY --from=helm /usr/bin/helm /usr/local/bin/helm

RUN useradd --create-home --uid 10001 wsched
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sdk ./sdk
COPY services ./services
COPY actors ./actors
COPY protos ./protos
COPY charts ./charts
RUN pip install --no-cache-dir ./sdk . && rm -rf /root/.cache

USER 10001
ENV WSCHED_HTTP_HOST=0.0.0.0 WSCHED_GRPC_HOST=0.0.0.0 WSCHED_METRICS_HOST=0.0.0.0
ENTRYPOINT ["wsched"]
CMD ["--help"]
