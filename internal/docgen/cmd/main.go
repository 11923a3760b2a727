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
	"io"
	"os"

	"github.com/ckptgate/ckptgate/internal/docgen"
	"github.com/ckptgate/ckptgate/reports"
	"github.com/ckptgate/ckptgate/verify"
)

func main() {
	out := flag.String("o", "docs/checks.md", "file to write")
	flag.Parse()
	md := docgen.ChecksMarkdown(verify.All())
	err := reports.WriteFileAtomic(*out, func(w io.Writer) error {
		_, err := w.Write(md)
		return err
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "docgen:", err)
		os.Exit(1)
	}
}
