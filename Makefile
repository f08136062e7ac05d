# The two commands of a fresh machine: `make dev` runs the whole stack on 127.0.0.1,
# `make test` runs every test. Both install what they need (moto, and for the tests localstripe,
# openapi-spec-validator and Debian's chromium) on first use.
.PHONY: dev test lint openapi-lint ci trigger receive bench

CARGO ?= cargo

dev:
	infra/bootstrap.sh moto
	$(CARGO) run -p sluice-local --bin sluice-local -- dev

# Every AWS request the functions make in the tests is recorded (SLUICE_AWS_OPS_DIR) and checked
# against their policies in template.yaml, both ways (crates/sluice-local/src/iam.rs).
# The browser tests need Debian's chromium (installed with apt-get when missing).
AWS_OPS_DIR := $(CURDIR)/target/aws-ops
test: openapi-lint
	infra/bootstrap.sh moto localstripe chromium
	rm -rf $(AWS_OPS_DIR)
	SLUICE_AWS_OPS_DIR=$(AWS_OPS_DIR) $(CARGO) test --workspace --all-targets
	$(CARGO) run -q -p sluice-local --bin sluice-local -- iam-check $(AWS_OPS_DIR)

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

# Every SPEC §9 figure on the local stack (release binaries built first; ~5 min on 2 cores), then
# the AWS-like table: the same operations on an emulator with in-region latency, beside the Python
# peer in ../shared/peer when present (SLUICE_PEER=dir elsewhere). BENCH_ARGS: --quick, --in-process
# (no release binaries, no AWS-like table), --aws-like (that table only), --latency dynamodb=4,sqs=8,kms=6.
# The bench binary is built by the same `cargo lambda build` as the functions (same target and
# toolchain settings), so the AWS SDK is compiled once in release, not twice.
bench:
	infra/bootstrap.sh moto lambda
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(CARGO) lambda build --release --x86-64 --bin stripe-ingress --bin api --bin webhook-egress --bin sluice-bench
	target/lambda/sluice-bench/bootstrap $(BENCH_ARGS)

# A local webhook endpoint that prints each delivery and checks its signature:
#   make receive PORT=4000 SECRET=whsec_…   (SECRET optional; the endpoint's signing secret)
PORT ?= 4000
receive:
	$(CARGO) run -p sluice-local --bin sluice-local -- receive --port $(PORT) $(if $(SECRET),--secret $(SECRET))
