package cli

import (
	"fmt"
	"io"

	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
	"github.com/spf13/cobra"
)

func (a *app) catalogCmd() *cobra.Command {
	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Replace the catalog of scopes and resources from a JSON file",
		Long: `Replace the catalog from a JSON file ("-" reads stdin), in the form that
catalog export writes. The import is refused, and nothing changes, if it
would leave any key invalid: dropping a scope or resource a key uses, or
making a scope that a key uses on chosen resources not per-resource. The
refusal lists the keys (up to 10) and what they use.

Also refused: an empty catalog (null, {}, no scopes), unknown fields, a
field given twice in one object, duplicate scopes or resources.`,
		Example: `  keyward catalog export catalog.json && $EDITOR catalog.json && keyward catalog import catalog.json
  keyward catalog import - < catalog.json`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := a.readInput(args[0], 1<<20)
			if err != nil {
				return err
			}
			cat, err := model.ParseCatalog(data)
			if err != nil {
				return usageErrorf("%s: %v", displayName(args[0]), err)
			}
			return a.withStore(cmd, nil, func(st *store.Store) error {
				if err := st.ImportCatalog(a.actor, cat); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "Imported the catalog: %s, %s.\n", model.Count(len(cat.Scopes), "scope", ""), model.Count(len(cat.Resources), "resource", ""))
				return nil
			})
		},
	}
	exp := &cobra.Command{
		Use:     "export FILE",
		Short:   "Write the catalog as JSON",
		Long:    `Write the catalog as JSON to FILE ("-" writes stdout).`,
		Example: `  keyward catalog export - | jq '.scopes[].name'`,
		Args:    exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStore(cmd, nil, func(st *store.Store) error {
				cat := st.Catalog()
				if cat.Scopes == nil {
					cat.Scopes = []model.Scope{}
				}
				if cat.Resources == nil {
					cat.Resources = []model.Resource{}
				}
				if args[0] == "-" {
					return writeJSON(a.stdout, cat)
				}
				return writeFileAtomic(args[0], true, 0o644, func(w io.Writer) error { return writeJSON(w, cat) })
			})
		},
	}
	return group("catalog", "Import or export the catalog of scopes and resources",
		`The catalog lists the scopes (each marked per-resource or not) and the
resources (applications and properties) that keys can be granted. A new
database gets a small demo catalog.`,
		`  keyward catalog export catalog.json
  keyward catalog import catalog.json`, imp, exp)
}
