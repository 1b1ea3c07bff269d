# The API on the official Bun image, pinned to the Bun of package.json.
# Migrations run at start (MIGRATE_ON_START). The exec form of CMD makes Bun
# PID 1, so docker stop's SIGTERM reaches it and it drains before exiting.
FROM oven/bun:1.4.5
WORKDIR /app
COPY package.json package-lock.json ./
# patch-package applies patches/ at install (postinstall)
COPY patches ./patches
RUN bun install --production
COPY tsconfig.json bunfig.toml ./
COPY src ./src
COPY db ./db
# Bun's allocator keeps the memory it frees instead of handing it back to the
# OS a fraction of a second later and faulting it in again, as npm start does:
# docs/operations.md#buns-allocator.
ENV NODE_ENV=production PORT=8080 HOST=0.0.0.0 MIMALLOC_PURGE_DELAY=-1
EXPOSE 8080
USER bun
CMD ["bun", "src/server.ts"]
