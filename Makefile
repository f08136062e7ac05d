# The two commands of a fresh machine: `make dev` runs the whole stack on 127.0.0.1,
# `make test` runs every test. Both install what they need (moto into .venv) on first use.
.PHONY: dev test lint ci trigger receive

CARGO ?= cargo

dev:
	infra/bootstrap.sh moto
	$(CARGO) run -p sluice-local --bin sluice-local -- dev

test:
	infra/bootstrap.sh moto
	$(CARGO) test --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

ci:
	bash .ci/run
