# The two commands of a fresh machine: `make dev` runs the whole stack on 127.0.0.1,
# `make test` runs every test. Both install what they need (moto into .venv) on first use.
.PHONY: dev test lint ci trigger receive bench

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

# Every SPEC §9 figure on the local stack (release binaries built first; ~5 min on 2 cores).
bench:
	infra/bootstrap.sh moto lambda
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(CARGO) lambda build --release --x86-64 --bin stripe-ingress --bin api --bin webhook-egress
	$(CARGO) run --release -p sluice-bench -- $(BENCH_ARGS)
