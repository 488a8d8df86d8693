# One image for every KMaaS process; the command picks the part.
FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY shared ./shared
COPY nodes ./nodes
COPY coordinator ./coordinator
COPY client ./client
COPY cli ./cli
USER node
ENV NODE_ENV=production
