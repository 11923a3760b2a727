# ckptgate — every target needs Go 1.27; the go command fetches it.
export GOTOOLCHAIN := go1.27.3
GO ?= go

.PHONY: build test demo bench fuzz lint
build:
	$(GO) build -o bin/ckptgate ./cmd/ckptgate

test:
	$(GO) test ./...
