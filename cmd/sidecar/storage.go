package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/wgsidecar/sidecar/collector"
)

// openStorage opens the store that --storage names: nil for "bolt" (the
// collector opens its embedded database in --data itself).
func openStorage(ctx context.Context, spec string, log *slog.Logger) (collector.Storage, error) {
	switch {
	case spec == "bolt":
		return nil, nil
	}
	return nil, fmt.Errorf("--storage %q: want bolt or clickhouse://HOST:PORT/DATABASE", spec)
}

// storageName is the store for the log: the directory or the DSN.
func storageName(spec, dataDir string) string {
	if spec == "bolt" {
		return dataDir
	}
	return strings.SplitN(spec, "?", 2)[0]
}
