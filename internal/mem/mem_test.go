package mem

import "testing"

func TestAvailable(t *testing.T) {
	if n := Available(); n <= 0 {
		t.Errorf("Available() = %d on Linux", n)
	}
}
