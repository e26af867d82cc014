//go:build !unix

package control

import (
	"fmt"
	"os"
)

// checkPrivateDir makes sure dir is a directory; ownership is not checked
// on this system.
func checkPrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}
