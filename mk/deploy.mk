# Deployment targets, included from the top-level Makefile.
#   make up / make down    the whole system in docker-compose (needs a Docker engine)
#   make up-canary-demo    the same with shadow scoring on, to watch the canary being rolled back
#   make up-scaled         the same with two replicas of every stage but outcome-tracker (STREAM_SHARDS=4;
#                          their metrics ports on free host ports: `docker compose ps` lists them)
#   make check-deploy      validates Dockerfile, compose, Kubernetes, Prometheus and Grafana files
#                          offline (installs its validators; TE_METRICS_URLS="url ..." adds live checks)
COMPOSE ?= docker compose

.PHONY: up up-canary-demo up-scaled down logs check-deploy
up:
	@scripts/compose-env.sh
	$(COMPOSE) up -d --build

# The same stack with the gateway scoring v2 in shadow: a canary rollback on purpose (docker-compose.canary-demo.yml).
up-canary-demo:
	@scripts/compose-env.sh
	$(COMPOSE) -f docker-compose.yml -f docker-compose.canary-demo.yml up -d --build

up-scaled:
	@scripts/compose-env.sh
	TE_STAGE_REPLICAS=2 STREAM_SHARDS=4 TE_PORT_INGEST= TE_PORT_FEATURE_PIPELINE= TE_PORT_STRATEGY_ENGINE= \
	TE_PORT_AUDIT_WRITER= TE_PORT_OPPORTUNITY_AGGREGATOR= $(COMPOSE) up -d --build

down:
	$(COMPOSE) down

logs:
	$(COMPOSE) logs -f --tail=100

check-deploy:
	scripts/check-deploy.sh

# deploy/k8s/monitoring/prometheusrule.yaml from deploy/prometheus/rules (committed; check-deploy checks it).
.PHONY: k8s-rules
k8s-rules:
	python3 scripts/gen-prometheusrule.py
