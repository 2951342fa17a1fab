# Deployment targets, included from the top-level Makefile.
#   make up / make down    the whole system in docker-compose (needs a Docker engine)
#   make check-deploy      validates Dockerfile, compose, Kubernetes, Prometheus and Grafana files
#                          offline (installs its validators; TE_METRICS_URLS="url ..." adds live checks)
COMPOSE ?= docker compose

.PHONY: up down logs check-deploy
up:
	$(COMPOSE) up -d --build

down:
	$(COMPOSE) down

logs:
	$(COMPOSE) logs -f --tail=100

check-deploy:
	scripts/check-deploy.sh
