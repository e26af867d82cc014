package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"
)

// failure is why a dial failed, as far as a proxy client can be told.
type failure int

const (
	failOther failure = iota
	failRefused
	failHostUnreachable
	failNetUnreachable
	failNotFound
	failTimeout
)

// classify tells why a dial through the Dialer failed. Host sockets report
// errno values; a user-space stack such as gVisor reports only text, so
// the messages are matched too.
func classify(err error) failure {
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		if dnsErr.IsTimeout {
			return failTimeout
		}
		return failNotFound
	case errors.Is(err, syscall.ECONNREFUSED):
		return failRefused
	case errors.Is(err, syscall.EHOSTUNREACH):
		return failHostUnreachable
	case errors.Is(err, syscall.ENETUNREACH):
		return failNetUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return failTimeout
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return failTimeout
	}
	msg := strings.ToLower(err.Error())
	switch {
	case strings.Contains(msg, "refused"):
		return failRefused
	case strings.Contains(msg, "no route to host"), strings.Contains(msg, "host is unreachable"), strings.Contains(msg, "host unreachable"):
		return failHostUnreachable
	case strings.Contains(msg, "network is unreachable"), strings.Contains(msg, "network unreachable"):
		return failNetUnreachable
	case strings.Contains(msg, "timed out"), strings.Contains(msg, "timeout"):
		return failTimeout
	}
	return failOther
}

// socksReplyFor is the SOCKS5 reply code (RFC 1928 §6) for a failed dial.
func socksReplyFor(err error) byte {
	switch classify(err) {
	case failRefused:
		return repConnRefused
	case failHostUnreachable, failNotFound:
		return repHostUnreachable
	case failNetUnreachable:
		return repNetUnreachable
	case failTimeout:
		return repTTLExpired
	}
	return repGeneralFailure
}

// httpStatusFor is the HTTP status for a failed dial or upstream request:
// 504 Gateway Timeout for a timeout, 502 Bad Gateway for the rest.
func httpStatusFor(err error) int {
	if classify(err) == failTimeout {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}
