package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// keyJSON is a key as the CLI prints it: model.Key's snake_case fields,
// lists as [] rather than null, plus the status the table shows:
// "status" stays the stored active/disabled (what enable and disable
// set), "display_status" is what verify answers for the key
// (model.StatusOf), CREATOR_DISABLED included.
type keyJSON struct {
	model.Key
	DisplayStatus model.DisplayStatus `json:"display_status"`
}

type keyWithToken struct {
	keyJSON
	Token string `json:"token"`
}

// statusOf is k's displayed status at now: model.StatusOf with its
// creator's account.
func statusOf(st *store.Store, k *model.Key, now time.Time) model.DisplayStatus {
	var creator *model.Operator
	if op, err := st.Operator(k.CreatedBy); err == nil {
		creator = &op
	}
	return model.StatusOf(k, creator, now)
}

func toKeyJSON(k *model.Key, status model.DisplayStatus) keyJSON {
	c := k.Clone()
	if c.Scopes == nil {
		c.Scopes = []string{}
	}
	if c.Resources == nil {
		c.Resources = []string{}
	}
	return keyJSON{Key: *c, DisplayStatus: status}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// row writes one table row, sanitising every cell: names, descriptions and
// audit details come from users and the database.
func row(tw io.Writer, cells ...string) {
	clean := slices.Clone(cells)
	for i, c := range clean {
		clean[i] = model.Sanitize(c) // tabs become spaces too
	}
	fmt.Fprintln(tw, strings.Join(clean, "\t"))
}
