package store

import (
	"strings"
)

// decodeIDName reads only the id and the name of a key record (their
// bytes point into b).
func decodeIDName(b []byte) (id, name []byte, err error) {
	if len(b) == 0 || b[0] != keyCodecV1 {
		return nil, nil, errCorruptRecord
	}
	d := decoder{b: b[1:]}
	id = d.raw()
	name = d.raw()
	return id, name, d.err
}

func foldName(name string) string { return strings.ToLower(strings.TrimSpace(name)) }
