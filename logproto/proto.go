// Package logproto owns the wire protocol of a log stream, the one thing
// the client (package logtail) and the collector (package collector)
// share:
//
//	POST {base}/c/{collection}/{private ID, 64 hex digits}
//	Content-Type: application/json
//	Content-Encoding: zstd (or identity)
//
//	[{"logtail":{"client_time":"…","proc_id":"…","proc_seq":1},…}, …]
//
// It holds the stream IDs (a private ID names a stream and authorises
// writing to it; the public ID, its SHA-256, names it to readers), the
// rule for collection names, the upload limits both sides derive theirs
// from, and the names of the path and of the members each entry carries.
// It knows nothing of buffering, retrying, storage or what entries say.
package logproto

// UploadPrefix begins the path of an upload: UploadPrefix + collection +
// "/" + the private ID's 64 hex digits.
const UploadPrefix = "/c/"

// The "logtail" member each entry carries, and its members.
const (
	// StampMember names the object the client adds as an entry's first
	// member; an entry the caller gives may not have one.
	StampMember = "logtail"
	// ClientTime is when the client stamped the entry (RFC 3339,
	// nanoseconds, UTC).
	ClientTime = "client_time"
	// ProcID is random per client process (16 hex digits from logtail; a
	// collector also takes a number).
	ProcID = "proc_id"
	// ProcSeq counts a process's entries of one stream: 1, 2, 3, …; the
	// collector drops an entry whose (stream, proc_id, proc_seq) it
	// stored already.
	ProcSeq = "proc_seq"
)

// EncodingZstd is the Content-Encoding of a compressed upload.
const EncodingZstd = "zstd"

// Upload limits.
const (
	// MaxEntryBytes bounds one entry as the client sends it, compacted
	// and without its stamp. A collector accepts entries of at least
	// twice this size.
	MaxEntryBytes = 1 << 20
	// MaxZstdWindow bounds the window of a zstd upload: the limit RFC 9659
	// sets for zstd as an HTTP content coding. A client compresses in
	// frames that fit it; a collector refuses larger ones.
	MaxZstdWindow = 8 << 20
)

// MaxCollectionLen bounds a collection name.
const MaxCollectionLen = 128

// ValidCollection reports whether name is a collection name: 1 to
// MaxCollectionLen letters, digits, '.', '_' or '-'.
func ValidCollection(name string) bool {
	if len(name) == 0 || len(name) > MaxCollectionLen {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
