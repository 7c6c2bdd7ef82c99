# rpgai: one image for the web servers (daphne), the Celery workers and migrations.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

RUN useradd --system --create-home --uid 10001 --user-group rpgai

COPY . .
RUN pip install -c constraints.txt . && rm -rf build *.egg-info

# Collected with DEBUG off, so that whitenoise gets its hashed, compressed manifest.
# These keys exist only for this build step; the running container must be given real ones.
RUN DEBUG=0 \
    SECRET_KEY=collectstatic-only-build-key-000000000000000000000000 \
    JWT_SIGNING_KEY=collectstatic-only-build-key-111111111111111111111111 \
    INTERNAL_TOOLS_SECRET=collectstatic-only-build-key-222222222222222222222222 \
    python manage.py collectstatic --noinput \
    && mkdir -p /app/media \
    && chown -R rpgai:rpgai /app/media

USER rpgai
EXPOSE 8000

CMD ["daphne", "--bind", "0.0.0.0", "--port", "8000", "--proxy-headers", "--websocket-max-message-size", "65536", "--websocket-max-frame-size", "65536", "rpgai.asgi:application"]
