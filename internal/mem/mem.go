// Package mem reports the memory the operating system can give this process,
// for the preflight checks that refuse work which would not fit.
package mem

import (
	"os"
	"strconv"
	"strings"
)

// Available returns MemAvailable from /proc/meminfo in bytes, or 0 when it
// cannot be read (then callers do not refuse anything).
func Available() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}
