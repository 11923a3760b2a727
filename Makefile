# ckptgate. Every target needs Go 1.27; the go command fetches it.
export GOTOOLCHAIN := go1.27.3
GO ?= go
FUZZTIME ?= 60s
BENCH_SIZE ?= 2GB
BENCH_WORLD ?= 8

.PHONY: build test test-race test-ollama demo bench bench-convert bench-engine fuzz lint checks-doc clean

build:
	$(GO) build -o bin/ckptgate ./cmd/ckptgate

## test: the whole suite (what CI and the README run)
test:
	$(GO) test ./...

test-race:
	$(GO) test -race ./...

## test-ollama: the deployment check, which needs cgo (gcc, g++)
test-ollama:
	CGO_ENABLED=1 $(GO) test -tags ollama ./internal/ollamacheck/... ./verify/...

## demo: convert, verify, smoke-test and report the tiny model in goldens/
demo: build
	rm -rf out/demo out/demo-report
	bin/ckptgate gate --source goldens/mllama-tiny-dev/runs/fsdp1 --base goldens/mllama-tiny-dev/base \
		--out out/demo --golden goldens/mllama-tiny-dev --report-dir out/demo-report

## bench: both benchmarks below
bench: bench-convert bench-engine

## bench-convert: convert/verify a synthetic 11B-shaped checkpoint against a plain copy
bench-convert: build
	$(GO) run ./cmd/ckptgate-bench -size $(BENCH_SIZE) -world $(BENCH_WORLD)

## bench-engine: the smoke run of the tiny model, then the reference engine's
## layers at Llama-3.2-11B-Vision's widths (random weights), one run each
bench-engine:
	$(GO) test -run '^$$' -bench 'SmokeTiny|Preprocess' -benchtime 10x ./internal/mllama ./internal/vision
	$(GO) test -run '^$$' -bench '11B' -benchtime 1x -timeout 60m ./internal/mllama

## fuzz: every fuzz target for FUZZTIME each (the Ollama one with its tag)
fuzz:
	@set -e; for spec in $$($(GO) list ./...) ollama:./internal/ollamacheck; do \
		tags=""; pkg=$$spec; \
		case $$spec in ollama:*) tags="-tags ollama"; pkg=$${spec#ollama:};; esac; \
		for f in $$($(GO) test $$tags -list 'Fuzz.*' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f"; \
			$(GO) test $$tags -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 10x $$pkg; \
		done; \
	done

lint:
	@test -z "$$(gofmt -l . | tee /dev/stderr)"
	$(GO) vet ./...
	$(GO) vet -tags ollama ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

## checks-doc: regenerate docs/checks.md from the checks' Docs
checks-doc:
	$(GO) run ./internal/docgen/cmd

clean:
	rm -rf bin out
