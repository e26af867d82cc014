package stats

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Key identifies a flow: its protocol and its two ends, the source being
// this node's side. It holds no pointer, so tables of keys cost the garbage
// collector nothing to scan, and compares with ==.
type Key struct {
	src, dst         [16]byte // IPv4 addresses in their IPv4-mapped form
	srcPort, dstPort uint16
	proto            uint8
	families         uint8 // source family | destination family<<4; a family is 4, 6, or 0 for none
}

// MakeKey builds a key. IPv4-mapped IPv6 addresses are unmapped.
func MakeKey(proto uint8, src, dst netip.AddrPort) Key {
	k := Key{proto: proto, srcPort: src.Port(), dstPort: dst.Port()}
	var sf, df uint8
	k.src, sf = addrBytes(src.Addr())
	k.dst, df = addrBytes(dst.Addr())
	k.families = sf | df<<4
	return k
}

func addrBytes(a netip.Addr) ([16]byte, uint8) {
	switch a = a.Unmap(); {
	case a.Is4():
		return a.As16(), 4
	case a.Is6():
		return a.As16(), 6
	}
	return [16]byte{}, 0
}

// Proto returns the IP protocol number (0 for physical-layer keys).
func (k Key) Proto() uint8 { return k.proto }

// Src returns the source (this node's side).
func (k Key) Src() netip.AddrPort {
	return netip.AddrPortFrom(toAddr(k.src, k.families&0xf), k.srcPort)
}

// Dst returns the destination (the remote side).
func (k Key) Dst() netip.AddrPort { return netip.AddrPortFrom(toAddr(k.dst, k.families>>4), k.dstPort) }

func toAddr(b [16]byte, family uint8) netip.Addr {
	switch family {
	case 4:
		return netip.AddrFrom16(b).Unmap()
	case 6:
		return netip.AddrFrom16(b)
	}
	return netip.Addr{}
}

// String formats the key as "proto src -> dst".
func (k Key) String() string {
	return itoa(int(k.proto)) + " " + k.Src().String() + " -> " + k.Dst().String()
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [8]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// hash mixes the key with seed. It is not cryptographic; the random seed
// keeps an outsider from choosing keys that collide.
func (k *Key) hash(seed uint64) uint64 {
	le := binary.LittleEndian
	h := seed
	h = mix(h ^ le.Uint64(k.src[0:8]))
	h = mix(h ^ le.Uint64(k.src[8:16]))
	h = mix(h ^ le.Uint64(k.dst[0:8]))
	h = mix(h ^ le.Uint64(k.dst[8:16]))
	h = mix(h ^ (uint64(k.srcPort) | uint64(k.dstPort)<<16 | uint64(k.proto)<<32 | uint64(k.families)<<40))
	return h
}

// mix is one multiply-fold round (as in wyhash).
func mix(x uint64) uint64 {
	hi, lo := bits.Mul64(x^0xa0761d6478bd642f, 0xe7037ed1a0b428db)
	return hi ^ lo
}

// SetIPv4 sets k to an IPv4 flow, reading the 4-byte addresses src and
// dst: the packet path's constructor, which builds the key in place.
func (k *Key) SetIPv4(proto uint8, src []byte, srcPort uint16, dst []byte, dstPort uint16) {
	// Whole words, not bytes: the hash reads the key back as words at
	// once, and a word load after byte stores stalls the CPU (the stores
	// cannot be forwarded). ::ffff:a.b.c.d is 10 zero bytes, ff ff, a.b.c.d.
	le := binary.LittleEndian
	le.PutUint64(k.src[0:8], 0)
	le.PutUint64(k.src[8:16], 0xffff0000|uint64(le.Uint32(src))<<32)
	le.PutUint64(k.dst[0:8], 0)
	le.PutUint64(k.dst[8:16], 0xffff0000|uint64(le.Uint32(dst))<<32)
	k.srcPort, k.dstPort, k.proto, k.families = srcPort, dstPort, proto, 4|4<<4
}

// SetIPv6 sets k to an IPv6 flow, reading the 16-byte addresses src and dst.
func (k *Key) SetIPv6(proto uint8, src []byte, srcPort uint16, dst []byte, dstPort uint16) {
	k.src = [16]byte(src)
	k.dst = [16]byte(dst)
	k.srcPort, k.dstPort, k.proto, k.families = srcPort, dstPort, proto, 6|6<<4
}
