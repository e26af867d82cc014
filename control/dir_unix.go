//go:build unix

package control

import (
	"fmt"
	"os"
	"syscall"
)

// checkPrivateDir makes sure dir, a default socket directory, is a real
// directory of the user's that nobody else may enter: in a shared /tmp,
// another user could have made it first.
func checkPrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%s belongs to uid %d, not to this user (uid %d): remove it or set [Control] Socket", dir, st.Uid, os.Getuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return os.Chmod(dir, 0o700)
	}
	return nil
}
