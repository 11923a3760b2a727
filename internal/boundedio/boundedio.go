// Package boundedio reads input whole into memory with a limit on its size,
// so that a hostile or mistaken file costs at most limit+1 bytes to refuse.
package boundedio

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Limits for the files ckptgate reads whole. They are far above what real
// models ship (an 11B index is ~100 kB, its tokenizer.json ~9 MB) and far below
// what would hurt a CI runner.
const (
	// JSONLimit bounds configs, indexes, manifests, policies and templates.
	JSONLimit = 64 << 20
	// TokenizerLimit bounds tokenizer.json.
	TokenizerLimit = 512 << 20
)

// ErrTooLarge is wrapped by the errors of ReadAll and ReadFile for input
// that holds more than the limit.
var ErrTooLarge = errors.New("larger than the limit")

// ReadAll reads r to EOF and returns what it read, unless r holds more than
// limit bytes: then it stops after limit+1 bytes and returns an error that
// wraps ErrTooLarge and names the limit.
func ReadAll(r io.Reader, limit int64) ([]byte, error) {
	if limit < 0 {
		return nil, fmt.Errorf("boundedio: negative limit %d", limit)
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w of %d bytes", ErrTooLarge, limit)
	}
	return b, nil
}

// ReadFile reads the file at path, refusing one of more than limit bytes.
// An error opening the file is os.Open's, so that errors.Is(err,
// fs.ErrNotExist) tells an absent file; any other error names the path.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := ReadAll(f, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}
