// Command cmd writes docs/checks.md from the checks' Docs:
//
//	go run ./internal/docgen/cmd [-o docs/checks.md]
//
// or go generate ./internal/docgen. go test ./internal/docgen fails when the
// file is stale.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/ckptgate/ckptgate/internal/atomicfile"
	"github.com/ckptgate/ckptgate/internal/docgen"
	"github.com/ckptgate/ckptgate/verify"
)

func main() {
	out := flag.String("o", "docs/checks.md", "file to write")
	flag.Parse()
	md := docgen.ChecksMarkdown(verify.All())
	if err := atomicfile.WriteBytes(*out, md); err != nil {
		fmt.Fprintln(os.Stderr, "docgen:", err)
		os.Exit(1)
	}
}
