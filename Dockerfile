# syntax=docker/dockerfile:1
# torchpredict serve in a container: the Open Inference Protocol V2 (REST) on port 8080, the bundle(s) in /models.
#
# Build with a bundle inside the image (a bundle folder, or a folder of bundles), torch from the PyTorch CPU wheel index:
#   docker build --build-arg TORCH_INDEX_URL=<the PyTorch CPU wheel index URL> \
#       --build-context bundle=/path/to/bundle -t torchpredict-serve .
# Leave out --build-context and the image holds no model: mount one at /models when it runs:
#   docker run --rm -p 8080:8080 -v /path/to/bundle:/models:ro torchpredict-serve
# With TORCH_INDEX_URL empty (the default) pip takes torch 2.13.0 from its default index (on Linux x86-64 that is the
# much larger CUDA build). Arguments after the image name replace the command after `torchpredict`:
#   docker run --rm -p 8080:8080 -e TORCHPREDICT_TOKEN=s3cret torchpredict-serve \
#       serve /models --host 0.0.0.0 --port 8080 --workers 2
# Kubernetes: deploy/kserve-inferenceservice.yaml. More in docs/serving.md.

# The bundle: empty unless `--build-context bundle=DIR` replaces this stage with DIR.
FROM scratch AS bundle

FROM python:3.11-slim
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

RUN pip install "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}

COPY pyproject.toml README.md /tmp/torchpredict/
COPY src /tmp/torchpredict/src
RUN pip install "/tmp/torchpredict[server]" && rm -rf /tmp/torchpredict

COPY --from=bundle / /models/
RUN useradd --create-home --uid 10001 torchpredict
USER torchpredict
WORKDIR /home/torchpredict

EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=2)"]
ENTRYPOINT ["torchpredict"]
CMD ["serve", "/models", "--host", "0.0.0.0", "--port", "8080"]
