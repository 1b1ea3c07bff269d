# The API on the official Bun image. Migrations run at start (MIGRATE_ON_START).
FROM oven/bun:1
WORKDIR /app
COPY package.json package-lock.json ./
# patch-package applies patches/ at install (postinstall)
COPY patches ./patches
RUN bun install --production
COPY tsconfig.json bunfig.toml ./
COPY src ./src
COPY db ./db
ENV NODE_ENV=production PORT=8080 HOST=0.0.0.0
EXPOSE 8080
USER bun
CMD ["bun", "src/server.ts"]
