package pickle

import "fmt"

// Global names a Python global as GLOBAL and STACK_GLOBAL spell it.
type Global struct {
	Module, Name string
}

func (g Global) String() string { return g.Module + "." + g.Name }

// Class is an allowlisted global. What the unpickler may do with it is
// exactly what its non-nil hooks allow: a Class without Call cannot be the
// target of REDUCE, one without New cannot be the target of NEWOBJ. A Class
// with neither is a plain value (a torch dtype, a storage type).
type Class struct {
	Module, Name string
	// Call implements REDUCE, i.e. calling the global with args.
	Call func(args Tuple) (any, error)
	// New implements NEWOBJ, i.e. cls.__new__(cls, *args).
	New func(args Tuple) (any, error)
}

func (c *Class) String() string { return c.Module + "." + c.Name }

// Is reports whether c is the global module.name.
func (c *Class) Is(module, name string) bool {
	return c != nil && c.Module == module && c.Name == name
}

// Allowlist maps the globals a pickle may name to their Class; every other
// global is refused with ErrForbiddenGlobal.
type Allowlist map[Global]*Class

// NewAllowlist builds an Allowlist from classes; a later class replaces an
// earlier one of the same name.
func NewAllowlist(classes ...*Class) Allowlist {
	a := make(Allowlist, len(classes))
	a.Add(classes...)
	return a
}

// Add adds classes to a.
func (a Allowlist) Add(classes ...*Class) {
	for _, c := range classes {
		a[Global{c.Module, c.Name}] = c
	}
}

// Value is a global that is only ever referenced, never called (a dtype, a
// storage type, a tensor type passed as an argument).
func Value(module, name string) *Class {
	return &Class{Module: module, Name: name}
}

// Instance is a plain class whose instances the pickle creates with NEWOBJ
// and no arguments, then fills with BUILD: how pickle protocol 2+ stores
// dataclasses and most ordinary objects. The result is an *Object.
func Instance(module, name string) *Class {
	c := &Class{Module: module, Name: name}
	c.New = func(args Tuple) (any, error) {
		if len(args) != 0 {
			return nil, fmt.Errorf("%s.__new__ called with %d arguments, expected none", c, len(args))
		}
		return &Object{Class: c, NewObj: true}, nil
	}
	return c
}

// Func is a global the pickle may call with REDUCE; fn computes the result.
func Func(module, name string, fn func(args Tuple) (any, error)) *Class {
	return &Class{Module: module, Name: name, Call: fn}
}

// OrderedDict is collections.OrderedDict, called with no arguments as torch
// and pickle do; the result is an empty *Dict that SETITEMS then fills.
func OrderedDict() *Class {
	return Func("collections", "OrderedDict", func(args Tuple) (any, error) {
		if len(args) != 0 {
			return nil, fmt.Errorf("collections.OrderedDict called with %d arguments, expected none", len(args))
		}
		return NewDict(), nil
	})
}
