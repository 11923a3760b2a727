// Package exit maps errors to ckptgate's documented exit codes:
// 0 success, 1 a check failed, 2 bad input or usage, 3 internal error.
package exit

import (
	"errors"
	"io/fs"
)

// The exit codes.
const (
	OK          = 0
	CheckFailed = 1
	BadInput    = 2
	Internal    = 3
)

// ErrBadInput is wrapped by errors caused by the user's input or flags.
var ErrBadInput = errors.New("bad input")

// ErrCheckFailed is returned when a command ran to completion and a check
// failed.
var ErrCheckFailed = errors.New("a check failed")

// inputErrors are sentinels of other packages that mean "the input is bad";
// they are registered by those packages' importers through Register.
var inputErrors []error

// Register adds sentinels whose presence in an error chain means bad input.
func Register(sentinels ...error) { inputErrors = append(inputErrors, sentinels...) }

// Code returns the exit code for err.
func Code(err error) int {
	switch {
	case err == nil:
		return OK
	case errors.Is(err, ErrCheckFailed):
		return CheckFailed
	case errors.Is(err, ErrBadInput), errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		return BadInput
	}
	for _, s := range inputErrors {
		if errors.Is(err, s) {
			return BadInput
		}
	}
	return Internal
}

// BadInputError wraps err so that Code reports BadInput.
func BadInputError(err error) error {
	if err == nil {
		return nil
	}
	return &wrapped{err: err, kind: ErrBadInput}
}

type wrapped struct {
	err  error
	kind error
}

func (w *wrapped) Error() string   { return w.err.Error() }
func (w *wrapped) Unwrap() []error { return []error{w.err, w.kind} }
