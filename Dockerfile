# syntax=docker/dockerfile:1
FROM node:20-slim AS web
WORKDIR /app/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOST=0.0.0.0 PORT=8080
WORKDIR /app
COPY pyproject.toml README.md ./
COPY signaling ./signaling
COPY sfu ./sfu
COPY benchmarks ./benchmarks
COPY devtools ./devtools
RUN pip install --no-cache-dir . && useradd --system --uid 10001 --home /app app
COPY web ./web
COPY --from=web /app/web/node_modules ./web/node_modules
USER app
EXPOSE 8080
# The SFU's media ports are ephemeral UDP ports: run with host networking or publish a range.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8080\")}/health', timeout=2)" || exit 1
CMD ["signaling"]
