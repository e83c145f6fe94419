# Sidelight — the two commands: `make run` (set up and run the agent) and `make test`
# (set up and run every test). Every other target is a step of set-up, each idempotent:
# a second run only redoes what changed.
SHELL := /bin/bash
.DEFAULT_GOAL := help
ROOT := $(CURDIR)
NODE_HOME := $(ROOT)/.tools/node
# Only inside make: the provisioned node (>= 22) first in PATH.
export PATH := $(NODE_HOME)/bin:$(PATH)

BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_OBJS := $(patsubst bpf/%.bpf.c,build/%.bpf.o,$(BPF_SRCS))
BPF_HDRS := $(wildcard bpf/*.h)
TS_SRCS := $(shell find src -name '*.ts' 2>/dev/null)
NATIVE_SRCS := $(wildcard native/src/*) native/binding.gyp bpf/sidelight.h
ADDON := native/build/Release/sidelight.node
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Wpadded -Werror -isystem build -Ibpf

.PHONY: help run test setup packages node deps bpf addon ts collector peers pysdk helm jaeger trace-screenshot fuzz reliability check clean
help:
	@echo "make run    set up and run the agent (ARGS='--config FILE' to pass flags)"
	@echo "make test   set up and run all tests"
	@echo "make setup  build everything without running"

run: setup
	./bin/sidelight run $(ARGS)

test: setup collector peers pysdk helm jaeger
	bash scripts/test.sh

setup: packages node deps bpf addon ts

packages:
	@bash scripts/packages.sh

node:
	@bash scripts/node.sh

deps: node_modules/.stamp
node_modules/.stamp: package.json package-lock.json | node
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

bpf: $(BPF_OBJS)
build/vmlinux.h: | packages
	@mkdir -p build
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@
build/%.bpf.o: bpf/%.bpf.c $(BPF_HDRS) build/vmlinux.h
	clang $(BPF_CFLAGS) -c $< -o $@

addon: $(ADDON)
$(ADDON): $(NATIVE_SRCS) node_modules/.stamp
	cd native && nodedir="$$(readlink -f $(NODE_HOME))" && \
	  npm_config_nodedir="$$nodedir" npx --no-install node-gyp rebuild --nodedir="$$nodedir" --loglevel=warn

ts: dist/.stamp
dist/.stamp: $(TS_SRCS) tsconfig.json node_modules/.stamp
	npx --no-install tsc -p tsconfig.json
	@touch $@

collector: | node
	@bash scripts/collector.sh

# OpenTelemetry Python SDK venv for the OTLP receiver e2e test, cached like the collector.
pysdk:
	@bash scripts/pysdk.sh >/dev/null

# Go test peers (h2c server, gRPC greeter) from test/peers/go, cached like the collector.
peers:
	@bash scripts/peers.sh

# Helm (for the chart tests: helm lint, helm template), built from the Go module proxy, cached.
helm:
	@bash scripts/helm.sh >/dev/null

# Jaeger v2 (OTLP in, in-memory store, query API) for test/e2e/jaeger.test.ts, built from the
# Go module proxy and cached like the collector. trace-screenshot regenerates the README's
# docs/img/jaeger-trace.png (needs root; installs Debian's chromium if missing).
jaeger:
	@bash scripts/jaeger.sh >/dev/null

trace-screenshot: setup collector jaeger
	bash scripts/trace-screenshot.sh

check: setup
	./bin/sidelight check

# The parser fuzz tests (HTTP/1, HTTP/2 frames, HPACK) at full size: a million generated and
# mutated inputs each (make test runs them at CI size). Result in bench/results/fuzz.txt.
fuzz: setup
	@{ echo "# make fuzz — $$(date -u +%FT%TZ), commit $$(git rev-parse --short HEAD)"; \
	  SIDELIGHT_FUZZ_FULL=1 npx --no-install ava --verbose --timeout=60m test/receiver/http1.test.ts test/receiver/hpack.test.ts test/receiver/http2.test.ts --match='*fuzz*' --match='mutated*'; } 2>&1 | tee bench/results/fuzz.txt

# Full-size reliability runs (issue #10): 300 000 connections, 20 000 processes, every hostile
# barrage, least privilege, shutdown, hygiene. Longer than CI allows; the result is recorded in
# bench/results/reliability.txt (README "Reliability").
reliability: setup collector
	bash scripts/reliability.sh

clean:
	rm -rf build dist native/build node_modules/.stamp
