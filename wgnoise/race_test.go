//go:build race

package wgnoise

const raceEnabled = true
