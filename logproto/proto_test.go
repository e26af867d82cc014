package logproto

import (
	"strings"
	"testing"
)

func TestValidCollection(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"flows", true},
		{"a", true},
		{"Fleet-1.prod_eu", true},
		{strings.Repeat("x", MaxCollectionLen), true},
		{"", false},
		{strings.Repeat("x", MaxCollectionLen+1), false},
		{"a/b", false},
		{"a b", false},
		{"..%2f", false},
		{"é", false},
	} {
		if got := ValidCollection(tc.name); got != tc.ok {
			t.Errorf("ValidCollection(%q) = %v; want %v", tc.name, got, tc.ok)
		}
	}
}
