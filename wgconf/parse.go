package wgconf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"
)

// Options adjust how Parse reaches the outside world; the zero value uses
// the process environment and file system.
type Options struct {
	LookupEnv func(string) (string, bool)  // nil means os.LookupEnv
	ReadFile  func(string) ([]byte, error) // nil means os.ReadFile; reads WGConfig imports and *File secrets
}

// ParseFile reads and parses the configuration file at path.
func ParseFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is already the error's File
		}
		return nil, &Error{File: path, Err: err}
	}
	return Parse(path, data, Options{})
}

// Parse parses a configuration file's contents. name is used in errors and
// warnings, becomes Config.Path, and relative paths of imports and secret
// files are resolved against its directory. Parse also runs the checks of
// Validate, with the lines of the keys involved.
func Parse(name string, data []byte, opts Options) (*Config, error) {
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.ReadFile == nil {
		opts.ReadFile = os.ReadFile
	}
	p := &parser{
		cfg:    &Config{Path: name},
		opts:   opts,
		pos:    &positions{main: name, wgFile: name, sections: make(map[sectionRef]*sectionPositions)},
		warned: make(map[string]bool),
	}
	if err := p.parseFile(name, data, false); err != nil {
		return nil, err
	}
	p.applyDefaults()
	p.cfg.pos = p.pos
	if err := p.cfg.validate(p.pos); err != nil {
		return nil, err
	}
	p.cfg.pos = p.pos
	return p.cfg, nil
}

// where is a position in a file.
type where struct {
	file string
	line int
}

// sectionRef names one section of a Config: its kind and, for repeated
// sections, its index among those of its kind.
type sectionRef struct {
	kind  sectionKind
	index int
}

type sectionPositions struct {
	header where
	keys   map[string]where // canonical key name → first occurrence
}

// positions remembers where each section and key of a parsed Config came
// from, so that Validate's findings can name a line.
type positions struct {
	main     string
	wgFile   string // the file that holds [Interface]: main, or the WGConfig import
	sections map[sectionRef]*sectionPositions
}

type parser struct {
	cfg      *Config
	opts     Options
	pos      *positions
	warned   map[string]bool // warning already given for this key
	imported *where          // the WGConfig line, once seen
	count    [numSections]int
	file     *fileState // the file being read
}

// fileState is the parser's state within one file.
type fileState struct {
	name     string // as given, for messages
	dir      string // base for relative paths
	imported bool   // a wg-quick file imported with WGConfig
	spec     *sectionSpec
	secPos   *sectionPositions
	seen     map[string]seenKey // slot → first setting, in the current section
}

type seenKey struct {
	name string
	line int
}

func (f *fileState) errorf(line int, key, format string, args ...any) *Error {
	return &Error{File: f.name, Line: line, Key: key, Err: fmt.Errorf(format, args...)}
}

func (p *parser) parseFile(name string, data []byte, imported bool) error {
	f := &fileState{name: name, dir: filepath.Dir(name), imported: imported}
	outer := p.file
	p.file = f
	defer func() { p.file = outer }()

	text := strings.TrimPrefix(string(data), "\ufeff")
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		t := strings.TrimSpace(line)
		if t == "" || t[0] == '#' || t[0] == ';' {
			continue
		}
		if t[0] == '[' {
			if err := p.openSection(f, n, t); err != nil {
				return err
			}
			continue
		}
		eq := strings.IndexByte(t, '=')
		if hash := strings.IndexByte(t, '#'); eq < 0 || (hash >= 0 && hash < eq) {
			// The line is not echoed: it may be a pasted secret.
			return f.errorf(n, "", "malformed line: want \"Key = Value\", a [Section] header or a # comment")
		}
		if err := p.setKey(f, n, strings.TrimSpace(t[:eq]), t[eq+1:]); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) openSection(f *fileState, n int, t string) error {
	h, _, _ := strings.Cut(t, "#")
	h = strings.TrimSpace(h)
	if len(h) < 2 || h[len(h)-1] != ']' {
		return f.errorf(n, "", "malformed section header: want [Name]")
	}
	name := strings.TrimSpace(h[1 : len(h)-1])
	kind, ok := sectionByName[strings.ToLower(name)]
	if !ok {
		if !isWord(name) {
			return f.errorf(n, "", "malformed section header: want [Name]")
		}
		return f.errorf(n, "["+name+"]", "unknown section")
	}
	spec := &sections[kind]
	label := "[" + spec.name + "]"
	switch {
	case f.imported && !spec.wgQuick:
		return f.errorf(n, label, "not allowed in a wg-quick file imported with WGConfig")
	case !f.imported && spec.wgQuick && p.imported != nil:
		return f.errorf(n, label, "not allowed here: WGConfig at %s:%d already imports [Interface] and [Peer]",
			displayName(p.imported.file), p.imported.line)
	case !spec.repeated && p.count[kind] > 0:
		first := p.pos.sections[sectionRef{kind: kind}].header
		return f.errorf(n, label, "duplicate section (first at %s:%d)", displayName(first.file), first.line)
	}
	ref := sectionRef{kind: kind, index: p.count[kind]}
	p.count[kind]++
	spec.open(p.cfg)
	f.spec = spec
	f.secPos = &sectionPositions{header: where{f.name, n}, keys: make(map[string]where)}
	f.seen = make(map[string]seenKey)
	p.pos.sections[ref] = f.secPos
	return nil
}

func (p *parser) setKey(f *fileState, n int, key, rest string) error {
	if !isWord(key) {
		return f.errorf(n, "", "malformed line: want \"Key = Value\"")
	}
	if f.spec == nil {
		if strings.EqualFold(key, "WGConfig") {
			if f.imported {
				return f.errorf(n, "WGConfig", "not allowed in a file imported with WGConfig")
			}
			return p.importWGQuick(f, n, rest)
		}
		return f.errorf(n, key, "key outside any section (only WGConfig may come before the first [Section])")
	}
	ks := f.spec.key(key)
	if ks == nil {
		if strings.EqualFold(key, "WGConfig") {
			return f.errorf(n, "WGConfig", "must come before the first [Section]")
		}
		for i := range sections {
			if other := &sections[i]; other != f.spec && other.key(key) != nil {
				return f.errorf(n, key, "unknown key in [%s] (it belongs in [%s])", f.spec.name, other.name)
			}
		}
		return f.errorf(n, key, "unknown key in [%s]", f.spec.name)
	}
	slot := ks.slot
	if slot == "" {
		slot = ks.name
	}
	if !ks.list {
		if prev, dup := f.seen[slot]; dup {
			if prev.name == ks.name {
				return f.errorf(n, ks.name, "duplicate key (first set at line %d)", prev.line)
			}
			return f.errorf(n, ks.name, "conflicts with %s at line %d", prev.name, prev.line)
		}
		f.seen[slot] = seenKey{name: ks.name, line: n}
	}
	var v string
	if ks.raw {
		v, _, _ = strings.Cut(rest, "#")
		v = strings.TrimSpace(v)
	} else {
		var err error
		if v, err = p.value(rest); err != nil {
			return f.errorf(n, ks.name, "%w", err)
		}
	}
	if ks.warn != "" && !p.warned[ks.name] {
		p.warned[ks.name] = true
		p.cfg.Warnings = append(p.cfg.Warnings, Warning{File: f.name, Line: n, Key: ks.name, Msg: ks.warn})
	}
	if err := ks.set(p, v); err != nil {
		return f.errorf(n, ks.name, "%w", err)
	}
	if _, ok := f.secPos.keys[ks.name]; !ok {
		f.secPos.keys[ks.name] = where{f.name, n}
	}
	return nil
}

// value turns the text after '=' into a value: quotes removed, comment cut,
// white space trimmed, $VAR replaced.
func (p *parser) value(rest string) (string, error) {
	v := strings.TrimLeftFunc(rest, unicode.IsSpace)
	quoted := false
	if v != "" && (v[0] == '"' || v[0] == '\'') {
		if end := strings.IndexByte(v[1:], v[0]); end >= 0 {
			tail := strings.TrimSpace(v[end+2:])
			if tail != "" && tail[0] != '#' {
				return "", errors.New("unexpected text after the closing quote")
			}
			v, quoted = v[1:end+1], true
		}
	}
	if !quoted {
		v, _, _ = strings.Cut(v, "#")
		v = strings.TrimSpace(v)
	}
	return p.expand(v)
}

// expand replaces a whole-value $NAME or ${NAME} with the environment
// variable's trimmed value; "$$" at the start escapes a literal "$".
func (p *parser) expand(v string) (string, error) {
	if !strings.HasPrefix(v, "$") {
		return v, nil
	}
	if strings.HasPrefix(v, "$$") {
		return v[1:], nil
	}
	name := v[1:]
	if strings.HasPrefix(name, "{") && strings.HasSuffix(name, "}") {
		name = name[1 : len(name)-1]
	}
	if !isEnvName(name) {
		// The value is not echoed: it may be a secret that starts with '$'.
		return "", errors.New("malformed variable reference: want $NAME or ${NAME} (write $$ for a literal $)")
	}
	val, ok := p.opts.LookupEnv(name)
	if !ok {
		return "", fmt.Errorf("environment variable %s is not set", name)
	}
	return strings.TrimSpace(val), nil
}

func isEnvName(s string) bool {
	return s != "" && !(s[0] >= '0' && s[0] <= '9') && isWordChars(s)
}

// isWord reports whether s can be a key or section name. Anything else is
// reported without being echoed, since a line without a key is most
// likely a pasted secret. Names are at most 32 characters for the same
// reason: a base64 key is 43 before its '='.
func isWord(s string) bool {
	if s == "" || len(s) > 32 || !isASCIIAlnum(rune(s[0])) || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	return isWordChars(s)
}

// isWordChars reports whether s holds only ASCII letters, digits and '_'.
func isWordChars(s string) bool {
	for _, r := range s {
		if r != '_' && !isASCIIAlnum(r) {
			return false
		}
	}
	return true
}

func isASCIIAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

func (p *parser) importWGQuick(f *fileState, n int, rest string) error {
	if p.imported != nil {
		return f.errorf(n, "WGConfig", "duplicate key (first set at line %d)", p.imported.line)
	}
	v, err := p.value(rest)
	if err != nil {
		return f.errorf(n, "WGConfig", "%w", err)
	}
	if v == "" {
		return f.errorf(n, "WGConfig", "empty value")
	}
	path := p.relative(v)
	data, err := p.opts.ReadFile(path)
	if err != nil {
		return f.errorf(n, "WGConfig", "importing wg-quick file: %w", err)
	}
	p.imported = &where{f.name, n}
	p.pos.wgFile = path
	return p.parseFile(path, data, true)
}

// relative resolves path against the directory of the file being read.
func (p *parser) relative(path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(p.file.dir, path)
}

// readSecretFile returns the trimmed contents of a secret file. Errors name
// the file, never its contents.
func (p *parser) readSecretFile(v string) (string, error) {
	if v == "" {
		return "", errors.New("empty value")
	}
	data, err := p.opts.ReadFile(p.relative(v))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// applyDefaults fills in defaults that depend on the whole [Interface].
func (p *parser) applyDefaults() {
	ifc := &p.cfg.Interface
	if ifc.MTU == 0 && p.pos.keyWhere(sectionRef{kind: secInterface}, "MTU") == nil {
		ifc.MTU = DefaultMTU // an explicit 0 stays, for validate to reject
	}
	if len(ifc.CheckAlive) > 0 && ifc.CheckAliveInterval == 0 {
		ifc.CheckAliveInterval = DefaultCheckAliveInterval
	}
}

func (ps *positions) keyWhere(ref sectionRef, key string) *where {
	sp := ps.sections[ref]
	if sp == nil {
		return nil
	}
	if w, ok := sp.keys[key]; ok {
		return &w
	}
	return nil
}
