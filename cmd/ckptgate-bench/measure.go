package main

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ioBuf is the baselines' read and write size: large, so that they run at
// the disk's sequential speed.
const ioBuf = 8 << 20

// eachFile calls fn for every regular file below dirs, in lexical order.
func eachFile(fn func(path string) error, dirs ...string) error {
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.Type().IsRegular() {
				return fn(p)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func dirBytes(dir string) (int64, error) {
	var n int64
	err := eachFile(func(p string) error {
		st, err := os.Stat(p)
		if err == nil {
			n += st.Size()
		}
		return err
	}, dir)
	return n, err
}

// copyDir is the convert baseline: every file of src read sequentially and
// written to dst through user space (as convert reads and writes), each
// fsynced, then the directory; cp without copy offload.
func copyDir(src, dst string) (time.Duration, error) {
	buf := make([]byte, ioBuf)
	t0 := time.Now()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return 0, err
	}
	err := eachFile(func(p string) error {
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(filepath.Join(dst, rel))
		if err != nil {
			return err
		}
		// Plain Read/Write calls: io.Copy would hand the copy to the
		// kernel (copy_file_range), which no converter can do.
		for {
			n, rerr := in.Read(buf)
			if n > 0 {
				if _, err := out.Write(buf[:n]); err != nil {
					out.Close()
					return err
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				out.Close()
				return rerr
			}
		}
		if err := out.Sync(); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}, src)
	if err != nil {
		return 0, err
	}
	d, err := os.Open(dst)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// readDirs is the verify baseline: every byte of the files below dirs read
// sequentially, one file after the other.
func readDirs(dirs ...string) (time.Duration, error) {
	buf := make([]byte, ioBuf)
	t0 := time.Now()
	err := eachFile(func(p string) error {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		for {
			_, err := f.Read(buf)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}, dirs...)
	return time.Since(t0), err
}

// evict drops a file's clean pages from the page cache.
func evict(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise %s: %w", path, err)
	}
	return nil
}

func freeBytes(dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// machine describes where the figures come from.
type machine struct {
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	Memory int64  `json:"memory_bytes"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

// String is the one-line description the bench prints.
func (m machine) String() string {
	return fmt.Sprintf("%s, %d cores, %.0f GB RAM, Linux %s, %s", m.CPU, m.Cores, gb(m.Memory), m.Kernel, m.Go)
}

func describeMachine() machine {
	m := machine{CPU: "unknown CPU", Cores: runtime.NumCPU(), Go: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.Memory = int64(si.Totalram) * int64(si.Unit)
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	return m
}
