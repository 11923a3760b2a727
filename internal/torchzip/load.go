package torchzip

import (
	"fmt"

	"github.com/ckptgate/ckptgate/internal/pickle"
)

// Load interprets data.pkl and returns its value, in which every tensor is
// a *Tensor. Only the tensor-rebuild globals are allowed; any other global
// is refused with an error that names it.
func (a *Archive) Load() (any, error) {
	b, err := a.readSmall("data.pkl", MaxPickle)
	if err != nil {
		return nil, err
	}
	l := &loader{a: a}
	v, err := pickle.Unpickle(b, &pickle.Config{Globals: l.allowlist(), PersistentLoad: l.persistentLoad})
	if err != nil {
		h := ""
		if fe, ok := errorsAs[*pickle.ForbiddenGlobalError](err); ok {
			h = hint(fe.Global)
		}
		return nil, fmt.Errorf("%s: %s/data.pkl: %w%s", a.where, a.Prefix, err, h)
	}
	return v, nil
}

// LoadTensor interprets a data.pkl that holds exactly one tensor, as DCP's
// tensor items do.
func (a *Archive) LoadTensor() (*Tensor, error) {
	v, err := a.Load()
	if err != nil {
		return nil, err
	}
	t, ok := v.(*Tensor)
	if !ok {
		return nil, fmt.Errorf("%w: %s: %s/data.pkl holds a %s, want one tensor", ErrFormat, a.where, a.Prefix, describe(v))
	}
	return t, nil
}
