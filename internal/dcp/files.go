package dcp

import (
	"container/list"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// maxOpenFiles bounds the data files held open at once: torchtune writes
// one file per item, thousands per checkpoint.
const maxOpenFiles = 64

// filePool opens a directory's data files on demand and keeps at most
// maxOpenFiles of them open, closing the least recently used idle one when
// it needs another. It is safe for concurrent use.
type filePool struct {
	dir    string
	mu     sync.Mutex
	open   map[string]*pooled
	lru    *list.List // of *pooled, most recent at the front; idle and busy
	closed bool
}

type pooled struct {
	name string
	f    *os.File
	refs int
	elem *list.Element
}

func newFilePool(dir string) *filePool {
	return &filePool{dir: dir, open: map[string]*pooled{}, lru: list.New()}
}

// reader returns an io.ReaderAt over the data file name.
func (p *filePool) reader(name string) io.ReaderAt { return &poolReader{p: p, name: name} }

type poolReader struct {
	p    *filePool
	name string
}

func (r *poolReader) ReadAt(b []byte, off int64) (int, error) {
	f, err := r.p.acquire(r.name)
	if err != nil {
		return 0, err
	}
	defer r.p.release(f)
	return f.f.ReadAt(b, off)
}

var errPoolClosed = errors.New("checkpoint is closed")

func (p *filePool) acquire(name string) (*pooled, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errPoolClosed
	}
	if e, ok := p.open[name]; ok {
		e.refs++
		p.lru.MoveToFront(e.elem)
		return e, nil
	}
	// Evict idle files from the back until there is room; busy ones stay
	// (the bound is then exceeded briefly rather than blocking).
	for el := p.lru.Back(); el != nil && len(p.open) >= maxOpenFiles; {
		prev := el.Prev()
		if e := el.Value.(*pooled); e.refs == 0 {
			e.f.Close()
			delete(p.open, e.name)
			p.lru.Remove(el)
		}
		el = prev
	}
	f, err := os.Open(filepath.Join(p.dir, name))
	if err != nil {
		return nil, err
	}
	e := &pooled{name: name, f: f, refs: 1}
	e.elem = p.lru.PushFront(e)
	p.open[name] = e
	return e, nil
}

func (p *filePool) release(e *pooled) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e.refs--
	if p.closed && e.refs == 0 {
		e.f.Close()
	}
}

// Close closes every idle file now and busy ones when their reads end.
func (p *filePool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var first error
	for _, e := range p.open {
		if e.refs == 0 {
			if err := e.f.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}
