package store

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/keyward/keyward/model"
)

// Keys are stored in a compact binary form rather than JSON: a 1M-key
// database loads in a fraction of the time, and the format is versioned by
// its first byte.
const keyCodecV1 = 1

var errCorruptRecord = errors.New("corrupt key record")

func putString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func putTime(b []byte, t *time.Time) []byte {
	if t == nil {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

func putStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = putString(b, s)
	}
	return b
}

// encodeKey serialises the persistent fields of k. Last-used lives in its
// own bucket so verification never bumps a key's version.
func encodeKey(k *model.Key) []byte {
	b := make([]byte, 0, 160)
	b = append(b, keyCodecV1)
	b = putString(b, k.ID)
	b = putString(b, k.Name)
	b = putString(b, k.Description)
	b = putString(b, string(k.Role))
	b = putStrings(b, k.Scopes)
	b = putStrings(b, k.Resources)
	b = putString(b, string(k.Status))
	ca := k.CreatedAt
	b = putTime(b, &ca)
	b = putString(b, k.CreatedBy)
	ua := k.UpdatedAt
	b = putTime(b, &ua)
	b = putTime(b, k.ExpiresAt)
	b = putString(b, k.Hint)
	b = binary.AppendUvarint(b, k.Version)
	b = putTime(b, k.GraceUntil)
	return b
}

// decoder reads a record; interning shares repeated strings (roles,
// scopes, resources, creators) across a million keys.
type decoder struct {
	b      []byte
	err    error
	intern map[string]string
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorruptRecord
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str(shared bool) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = errCorruptRecord
		return ""
	}
	raw := d.b[:n]
	d.b = d.b[n:]
	if shared && d.intern != nil {
		if s, ok := d.intern[string(raw)]; ok {
			return s
		}
		s := string(raw)
		d.intern[s] = s
		return s
	}
	return string(raw)
}

func (d *decoder) strs() []string { return d.strsFrom(nil) }

func (d *decoder) time() *time.Time {
	if d.err != nil {
		return nil
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorruptRecord
		return nil
	}
	d.b = d.b[n:]
	if v == 0 {
		return nil
	}
	t := time.Unix(0, v).UTC()
	return &t
}

func decodeKey(b []byte, intern map[string]string) (*model.Key, error) {
	if len(b) == 0 || b[0] != keyCodecV1 {
		return nil, errCorruptRecord
	}
	d := decoder{b: b[1:], intern: intern}
	k := &model.Key{}
	k.ID = d.str(false)
	k.Name = d.str(false)
	k.Description = d.str(false)
	k.Role = model.Role(d.str(true))
	k.Scopes = d.strs()
	k.Resources = d.strs()
	k.Status = model.Status(d.str(true))
	if t := d.time(); t != nil {
		k.CreatedAt = *t
	}
	k.CreatedBy = d.str(true)
	if t := d.time(); t != nil {
		k.UpdatedAt = *t
	}
	k.ExpiresAt = d.time()
	k.Hint = d.str(false)
	k.Version = d.uvarint()
	k.GraceUntil = d.time()
	if d.err != nil {
		return nil, d.err
	}
	return k, nil
}

// hashRef is the value of the hash index: which key a token hash belongs
// to, and whether it is the previous secret kept for a grace period.
type hashRef struct {
	id       string
	previous bool
}

func encodeHashRef(r hashRef) []byte {
	b := make([]byte, 0, len(r.id)+1)
	if r.previous {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	return append(b, r.id...)
}

func decodeHashRef(b []byte) (hashRef, error) {
	if len(b) < 2 {
		return hashRef{}, errCorruptRecord
	}
	return hashRef{previous: b[0] == 1, id: string(b[1:])}, nil
}

// last-used record: 8-byte unix nanos + source.
func encodeLastUsed(at int64, from string) []byte {
	return appendLastUsed(make([]byte, 0, 8+len(from)), at, from)
}

func appendLastUsed(b []byte, at int64, from string) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(at))
	return append(b, from...)
}

func decodeLastUsed(b []byte) (int64, string, error) {
	if len(b) < 8 {
		return 0, "", errCorruptRecord
	}
	return int64(binary.BigEndian.Uint64(b)), string(b[8:]), nil
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// loadAlloc hands out the small pieces of decoded keys from slabs: scope
// and resource lists (capped at their length, so an append copies) and
// expiry and grace times.
type loadAlloc struct {
	strs  []string
	times []time.Time
}

func (a *loadAlloc) strings(n int) []string {
	if a == nil {
		return make([]string, n)
	}
	if n > cap(a.strs)-len(a.strs) {
		a.strs = make([]string, 0, max(n, 1024))
	}
	i := len(a.strs)
	a.strs = a.strs[:i+n]
	return a.strs[i : i+n : i+n]
}

func (a *loadAlloc) time(t time.Time) *time.Time {
	if len(a.times) == cap(a.times) {
		a.times = make([]time.Time, 0, 256)
	}
	a.times = append(a.times, t)
	return &a.times[len(a.times)-1]
}

// decodeKeyInto is decodeKey writing into *k, with fewer allocations: the
// record's unshared strings (id, name, description, hint) are substrings
// of one string, and lists and times come from a's slabs. On error *k is
// left partly written.
func decodeKeyInto(k *model.Key, b []byte, intern map[string]string, scratch *[]byte, a *loadAlloc) error {
	if len(b) == 0 || b[0] != keyCodecV1 {
		return errCorruptRecord
	}
	d := decoder{b: b[1:], intern: intern}
	id := d.raw()
	name := d.raw()
	desc := d.raw()
	k.Role = model.Role(d.str(true))
	k.Scopes = d.strsFrom(a)
	k.Resources = d.strsFrom(a)
	k.Status = model.Status(d.str(true))
	if t, ok := d.timeVal(); ok {
		k.CreatedAt = t
	}
	k.CreatedBy = d.str(true)
	if t, ok := d.timeVal(); ok {
		k.UpdatedAt = t
	}
	if t, ok := d.timeVal(); ok {
		k.ExpiresAt = a.time(t)
	}
	hint := d.raw()
	k.Version = d.uvarint()
	if t, ok := d.timeVal(); ok {
		k.GraceUntil = a.time(t)
	}
	if d.err != nil {
		return d.err
	}
	buf := append(append(append(append((*scratch)[:0], id...), name...), desc...), hint...)
	*scratch = buf
	all := string(buf)
	i := 0
	next := func(n int) string { i += n; return all[i-n : i] }
	k.ID, k.Name, k.Description, k.Hint = next(len(id)), next(len(name)), next(len(desc)), next(len(hint))
	return nil
}

// raw is str(false) without the copy: the bytes point into the record.
func (d *decoder) raw() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errCorruptRecord
		return nil
	}
	r := d.b[:n]
	d.b = d.b[n:]
	return r
}

// strsFrom reads a string list, taking it from a's slab (a plain slice
// when a is nil).
func (d *decoder) strsFrom(a *loadAlloc) []string {
	n := d.uvarint()
	if d.err != nil || n == 0 {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errCorruptRecord
		return nil
	}
	out := a.strings(int(n))
	for i := range out {
		out[i] = d.str(true)
	}
	return out
}

// timeVal is time without allocating: ok is false where time returns nil.
func (d *decoder) timeVal() (time.Time, bool) {
	if d.err != nil {
		return time.Time{}, false
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorruptRecord
		return time.Time{}, false
	}
	d.b = d.b[n:]
	if v == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, v).UTC(), true
}
