# The two commands of a fresh machine: `make dev` runs the whole stack on 127.0.0.1,
# `make test` runs every test. Both install what they need (moto into .venv) on first use.
.PHONY: dev test lint openapi-lint ci trigger receive bench

CARGO ?= cargo

dev:
	infra/bootstrap.sh moto
	$(CARGO) run -p sluice-local --bin sluice-local -- dev

# The browser tests need Debian's chromium (installed with apt-get when missing).
test: openapi-lint
	infra/bootstrap.sh moto chromium
	$(CARGO) test --workspace --all-targets

# docs/openapi.json against the OpenAPI 3.1 specification (a test keeps it equal to the code's).
openapi-lint:
	infra/bootstrap.sh openapi-lint
	.venv/bin/openapi-spec-validator docs/openapi.json

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

ci:
	bash .ci/run

# Our `stripe trigger`: sign a Stripe event file with the first of STRIPE_WEBHOOK_SECRETS and POST
# it to the running `make dev` stack. TENANT=tnt_… replaces the fixtures' placeholder tenant;
# FRESH=1 sends it as a new event (new id, created = now) instead of a redelivery.
trigger:
	@test -n "$(EVENT)" || { echo "usage: make trigger EVENT=tests/fixtures/stripe/<file>.json [TENANT=tnt_…] [FRESH=1]" >&2; exit 2; }
	$(CARGO) run -q -p sluice-local --bin sluice-local -- trigger $(if $(FRESH),--fresh) $(if $(TENANT),--tenant $(TENANT)) $(EVENT)

# Every SPEC §9 figure on the local stack (release binaries built first; ~5 min on 2 cores).
bench:
	infra/bootstrap.sh moto lambda
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(CARGO) lambda build --release --x86-64 --bin stripe-ingress --bin api --bin webhook-egress
	$(CARGO) run --release -p sluice-bench -- $(BENCH_ARGS)

# A local webhook endpoint that prints each delivery and checks its signature:
#   make receive PORT=4000 SECRET=whsec_…   (SECRET optional; the endpoint's signing secret)
PORT ?= 4000
receive:
	$(CARGO) run -p sluice-local --bin sluice-local -- receive --port $(PORT) $(if $(SECRET),--secret $(SECRET))
