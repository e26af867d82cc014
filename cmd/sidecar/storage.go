package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/wgsidecar/sidecar/collector"
	"github.com/wgsidecar/sidecar/collector/clickhouse"
)

// openStorage opens the store that --storage names: nil for "bolt" (the
// collector opens its embedded database in --data itself), ClickHouse for
// clickhouse://HOST:PORT/DATABASE.
func openStorage(ctx context.Context, spec string, log *slog.Logger) (collector.Storage, error) {
	switch {
	case spec == "bolt":
		return nil, nil
	case strings.HasPrefix(spec, "clickhouse://"):
		return clickhouse.Open(ctx, spec, log)
	}
	return nil, fmt.Errorf("--storage %q: want bolt or clickhouse://HOST:PORT/DATABASE", storageName(spec, ""))
}

// storageName is the store for the log: the directory, or the URL
// without its password and parameters.
func storageName(spec, dataDir string) string {
	if spec == "bolt" {
		return dataDir
	}
	u, err := url.Parse(spec)
	if err != nil {
		return "(an unparsable URL)"
	}
	u.RawQuery = ""
	return u.Redacted()
}
