package control

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// DefaultDir is the directory of default control sockets:
// $XDG_RUNTIME_DIR/wgsidecar when XDG_RUNTIME_DIR is set (the per-user
// runtime directory of the login session), else /tmp/wgsidecar-UID. The
// directory is made with mode 0700 when missing; a /tmp one must belong
// to the user.
func DefaultDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "wgsidecar")
	}
	return filepath.Join("/tmp", "wgsidecar-"+strconv.Itoa(os.Getuid()))
}

// DefaultSocket is the control socket of the node with the given ID when
// the file's [Control] section names none: DefaultDir()/ID.sock. The ID is
// the one derived from the node's public key (sidecar.NodeID).
func DefaultSocket(id string) string {
	return filepath.Join(DefaultDir(), id+".sock")
}

// ErrInUse is returned by Listen when a live sidecar already answers on
// the socket path.
var ErrInUse = errors.New("in use by a running sidecar")

// maxPath is the longest unix socket path the kernel takes (sun_path less
// its terminating NUL).
const maxPath = 107

// listen makes the unix socket at path, owner-only (mode 0600). A socket
// file left by a process that died (nothing accepts on it) is replaced; one
// a live process listens on is ErrInUse; any other file is left alone and
// refused. It returns the listener and the socket file's identity, so that
// only this socket is removed at the end.
func listen(path string) (*net.UnixListener, os.FileInfo, error) {
	if path == "" {
		return nil, nil, errors.New("control socket: empty path")
	}
	if len(path) > maxPath {
		return nil, nil, fmt.Errorf("control socket %s: path is %d bytes, longer than unix sockets allow (%d)", path, len(path), maxPath)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	if dir == DefaultDir() {
		if err := checkPrivateDir(dir); err != nil {
			return nil, nil, fmt.Errorf("control socket: %w", err)
		}
	}
	if err := removeStale(path); err != nil {
		return nil, nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	// The file is removed by Server.Close, and only if it is still ours.
	ln.SetUnlinkOnClose(false)
	// Whatever the umask made of it, only the owner may connect.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, fi, nil
}

// removeStale removes the socket file at path if no process accepts on it.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("control socket %s: a file that is not a socket is in the way; not replacing it", path)
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("control socket %s: %w (stop it, or give this node another [Control] Socket)", path, ErrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control socket %s: cannot tell whether it is in use: %w", path, err)
	}
	// A socket nobody listens on: its process ended without removing it.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control socket: removing stale socket: %w", err)
	}
	return nil
}

// removeIfSame removes path if it is still the file fi describes, and not
// a socket another process made there since.
func removeIfSame(path string, fi os.FileInfo) {
	if cur, err := os.Lstat(path); err == nil && os.SameFile(cur, fi) {
		os.Remove(path)
	}
}
