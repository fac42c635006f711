package coordinator

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running: every
// coordinator, executor, store and server a test starts must stop with it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
