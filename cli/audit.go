package cli

import (
	"fmt"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
	"github.com/spf13/cobra"
)

func (a *app) auditCmd() *cobra.Command {
	var asJSON bool
	var target, grep string
	var limit int
	c := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log, newest first",
		Long: `Show the append-only audit log, newest first: who did what to which key,
operator, the shared secret or the catalog. It never holds a token or secret;
keys are named by id and a short token hint.`,
		Example: `  keyward audit --limit 20
  keyward audit --key key_abcdefghijkl
  keyward audit --grep disable --json`,
		Args: a.noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 0 {
				return usageErrorf("--limit must be 0 (all) or more")
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				target, err := auditTarget(st, target)
				if err != nil {
					return err
				}
				evs, err := st.Audit(store.AuditFilter{Target: target, Query: grep, Limit: limit})
				if err != nil {
					return err
				}
				if asJSON {
					if evs == nil {
						evs = []model.AuditEvent{}
					}
					return writeJSON(a.stdout, evs)
				}
				tw := newTable(a.stdout)
				fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tTARGET\tDETAIL")
				for _, ev := range evs {
					row(tw, model.FormatTime(&ev.Time, ""), ev.Actor, ev.Action, ev.Target, ev.Detail)
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().StringVar(&target, "key", "", `only events about this key, by id or name (or an operator name, "secret", "catalog")`)
	c.Flags().IntVar(&limit, "limit", 0, "show at most N events (0: all)")
	c.Flags().StringVar(&grep, "grep", "", "only events whose actor, action, target or detail contain TEXT (case-insensitive)")
	return c
}

// auditTarget turns audit --key into the target events are kept under: a
// live key's id as given, a live key's name as its id, and anything with
// events of its own (a deleted key's id, an operator, "secret",
// "catalog") as given. Anything else is an error rather than an empty
// table that looks like "no events".
func auditTarget(st *store.Store, ref string) (string, error) {
	if ref == "" {
		return "", nil
	}
	if _, err := st.Key(ref); err == nil {
		return ref, nil
	}
	if evs, err := st.Audit(store.AuditFilter{Target: ref, Limit: 1}); err != nil || len(evs) > 0 {
		return ref, err
	}
	if _, err := st.Operator(ref); err == nil || ref == "secret" || ref == "catalog" {
		return ref, nil
	}
	k, err := st.ResolveKey(ref)
	if err != nil {
		return "", err
	}
	return k.ID, nil
}
