//go:build !unix

package embedded

import "os"

// lockDir takes no lock where flock is missing.
// NOTE: two servers on one data directory are not detected on such systems.
func lockDir(dir string) (*os.File, error) { return nil, os.MkdirAll(dir, 0o700) }

func unlockDir(*os.File) {}
