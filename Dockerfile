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
COPY idp ./idp
# The data folder of a node (or the identity provider's keys): a named volume mounted here takes
# this owner, so the unprivileged user can write it.
RUN mkdir -p /data && chown node:node /data
USER node
ENV NODE_ENV=production
