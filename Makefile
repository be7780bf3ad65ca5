# Everyday commands. Each target runs one command of the project; see README.md.

.PHONY: help run fake run-fake test ci docker docker-down docker-check bench fmt lint openapi

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

run: ## the service on its SQLite default at http://127.0.0.1:8000
	cargo run --release

fake: ## fake-anthropic at http://127.0.0.1:8001, for trying the service without an API key
	cargo run --release -p fake-anthropic -- --port 8001

run-fake: ## the service, its model API being fake-anthropic (start `make fake` first)
	ANTHROPIC_API_KEY=anything ANTHROPIC_BASE_URL=http://127.0.0.1:8001 cargo run --release

test: ## every test (scripts/test); PostgreSQL tests need TEST_DATABASE_URL or a local server
	scripts/test

ci: ## what CI runs: fmt, clippy, scripts/test, the Docker check (.ci/run)
	.ci/run

docker: ## build the image and start it with Docker Compose (./docker-start.sh --build)
	./docker-start.sh --build

docker-down: ## remove the containers, keep the data
	./docker-start.sh --down

docker-check: ## end-to-end check of the Docker deployment with podman (root, 5-10 min)
	bash scripts/docker-check.sh

bench: ## the benchmark against fake-anthropic (bench/run.sh)
	bench/run.sh

fmt: ## format the code
	cargo fmt --all

lint: ## formatting and clippy, as CI checks them
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

openapi: ## regenerate docs/openapi.json after an API change
	UPDATE_OPENAPI=1 cargo test --test openapi_drift
