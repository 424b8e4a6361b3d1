package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/model"
	"github.com/keyward/keyward/store"
)

// crashFlush is serve's --flush-interval in the crash test; crashMargin
// covers a flush's own duration and a loaded CI machine.
const (
	crashFlush  = time.Second
	crashMargin = time.Second
)

// TestCrashKill9UnderMixedLoad: `keyward serve` runs with HTTP
// verifications on several connections, one SSH session creating keys
// through the form and another renaming a key through the edit form. At a
// random moment it is SIGKILLed. Then: Tx.Check is clean, every create the
// reveal screen showed and every edit the TUI confirmed is on disk, and
// every key's last_used_at is no older than its last verification
// acknowledged more than one flush interval (+ margin) before the kill.
// Three rounds on the same file, each restarting serve after the kill.
func TestCrashKill9UnderMixedLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("kills the real binary several times; skipped with -short")
	}
	k := newInstall(t)
	type seeded struct{ ID, Token string }
	var keys []seeded
	for i := 0; i < 6; i++ {
		var s seeded
		out := k.ok("keys", "create", "--json", "--name", fmt.Sprintf("load-%d", i), "--scope", "coupons:read")
		if err := json.Unmarshal([]byte(out), &s); err != nil || s.Token == "" {
			t.Fatalf("create --json: %v %q", err, out)
		}
		keys = append(keys, s)
	}
	var target seeded
	if err := json.Unmarshal([]byte(k.ok("keys", "create", "--json", "--name", "aaa-edit-0", "--role", "admin")), &target); err != nil {
		t.Fatal(err)
	}
	op := testkit.NewSSHKey(t)
	k.ok("operators", "add", "crash", "--role", "admin", "--key", op.Line+" crash@test")
	var sec struct{ Secret string }
	if err := json.Unmarshal([]byte(k.ok("secret", "show", "--json")), &sec); err != nil || sec.Secret == "" {
		t.Fatalf("secret show: %v", err)
	}

	created := map[string]string{} // name -> token, acknowledged by the reveal screen
	editAcked := 0                 // the last n for which the TUI said Saved key "aaa-edit-n"
	editSent := 0
	totalVerifies, totalCreates, totalEdits := 0, 0, 0
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))

	for round := 0; round < 3; round++ {
		srv := k.serve("--flush-interval", crashFlush.String())
		creator := testkit.OpenTerm(t, srv.dial(t, "crash", op))
		editor := testkit.OpenTerm(t, srv.dial(t, "crash", op))
		creator.WaitText(10*time.Second, 0, "Name")
		editor.WaitText(10*time.Second, 0, "aaa-edit-")
		// The editor filters the table down to its one key.
		m := editor.Mark()
		editor.Keys("/", "aaa-edit", keyEnter)
		editor.WaitText(5*time.Second, m, "aaa-edit-")

		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		okAt := make([][]time.Time, len(keys)) // per key: send times of acknowledged VALIDs, with their ack times
		ackAt := make([][]time.Time, len(keys))
		var verifies atomic.Int64

		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := &http.Client{Timeout: 3 * time.Second}
				for i := g; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					ki := i % len(keys)
					sent := time.Now()
					code, body, err := verifyOnce(c, "http://"+srv.httpAddr, sec.Secret,
						`{"key":"`+keys[ki].Token+`","scope":"coupons:read","resource":"web-shop"}`)
					if err != nil {
						time.Sleep(5 * time.Millisecond)
						continue
					}
					if code == 200 && strings.Contains(string(body), `"code":"VALID"`) {
						acked := time.Now()
						mu.Lock()
						okAt[ki] = append(okAt[ki], sent)
						ackAt[ki] = append(ackAt[ki], acked)
						mu.Unlock()
						verifies.Add(1)
					}
				}
			}()
		}
		var createdRound []string
		wg.Add(1)
		go func() { // creates through the SSH form
			defer wg.Done()
			for i := 0; ; i++ {
				name := fmt.Sprintf("crash-r%d-%d", round, i)
				m := creator.Mark()
				if !creator.TypeKeys("n") {
					return
				}
				if _, ok := creator.WaitOut(m, 5*time.Second, stop, func(s string) bool { return strings.Contains(s, "New key") }); !ok {
					return
				}
				if !creator.TypeKeys(name, keyEnter, keyEnter, keyUp, keyEnter, keyEnter, keyEnter, keyEnter) {
					return
				}
				s, ok := creator.WaitOut(m, 5*time.Second, stop, func(s string) bool { return tokenRE.MatchString(s) })
				if !ok {
					return
				}
				mu.Lock()
				created[name] = tokenRE.FindString(s)
				createdRound = append(createdRound, name)
				mu.Unlock()
				m = creator.Mark()
				if !creator.TypeKeys(keyEnter) {
					return
				}
				if _, ok := creator.WaitOut(m, 5*time.Second, stop, func(s string) bool { return strings.Contains(s, "Stored it?") }); !ok {
					return
				}
				m = creator.Mark()
				if !creator.TypeKeys("y") {
					return
				}
				if _, ok := creator.WaitOut(m, 5*time.Second, stop, func(s string) bool { return strings.Contains(s, name) }); !ok {
					return
				}
			}
		}()
		wg.Add(1)
		go func() { // renames the target through the SSH edit form
			defer wg.Done()
			for {
				mu.Lock()
				editSent = editAcked + 1
				n := editSent
				mu.Unlock()
				m := editor.Mark()
				if !editor.TypeKeys("e") {
					return
				}
				if _, ok := editor.WaitOut(m, 5*time.Second, stop, func(s string) bool { return strings.Contains(s, "Edit aaa-edit-") }); !ok {
					return
				}
				// ctrl+u clears the name; then name, description, role,
				// note, lifetime, status, submit.
				if !editor.TypeKeys("\x15", fmt.Sprintf("aaa-edit-%d", n), keyEnter, keyEnter, keyEnter, keyEnter, keyEnter, keyEnter, keyEnter) {
					return
				}
				want := fmt.Sprintf("Saved key %q", fmt.Sprintf("aaa-edit-%d", n))
				if _, ok := editor.WaitOut(m, 5*time.Second, stop, func(s string) bool { return strings.Contains(s, want) }); !ok {
					return
				}
				mu.Lock()
				editAcked = n
				mu.Unlock()
			}
		}()

		loadStart := time.Now()
		time.Sleep(3*time.Second + time.Duration(rng.Int64N(int64(3*time.Second))))
		killed := time.Now()
		if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-srv.done
		srv.done <- nil
		close(stop)
		wg.Wait()

		// Reopen the file the killed server held.
		st, err := store.Open(k.db, store.Options{NoLastUsed: true, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatalf("round %d: open after SIGKILL: %v", round, err)
		}
		if err := st.Check(); err != nil {
			st.Close()
			t.Fatalf("round %d: Tx.Check after SIGKILL: %v", round, err)
		}
		mu.Lock()
		for name, tok := range created {
			r := st.Verify(tok, "coupons:read", "web-shop", "check")
			if r.Code != model.CodeValid {
				t.Errorf("round %d: acknowledged create %s lost after SIGKILL: %s", round, name, r.Code)
				continue
			}
			if key, _ := st.Key(r.KeyID); key == nil || key.Name != name || key.CreatedBy != "crash" {
				t.Errorf("round %d: acknowledged create %s is %+v", round, name, key)
			}
		}
		tk, err := st.Key(target.ID)
		if err != nil {
			t.Fatalf("round %d: edit target: %v", round, err)
		}
		got := -1
		fmt.Sscanf(tk.Name, "aaa-edit-%d", &got)
		if got != editAcked && got != editSent {
			t.Errorf("round %d: edit target is %q after SIGKILL; the TUI confirmed aaa-edit-%d (and aaa-edit-%d may have been in flight)", round, tk.Name, editAcked, editSent)
		}
		// No write appears that nobody made: at most one unacknowledged
		// create per round (the one in flight when the kill came).
		if extra := st.KeyCount() - (len(keys) + 1 + len(created)); extra < 0 || extra > round+1 {
			t.Errorf("round %d: %d keys on disk, %d acknowledged", round, st.KeyCount(), len(keys)+1+len(created))
		}
		// Last-used: a verification acknowledged before kill-flush-margin
		// must be on disk.
		horizon := killed.Add(-crashFlush - crashMargin)
		checked := 0
		for i, s := range keys {
			var need time.Time
			for j, a := range ackAt[i] {
				if a.Before(horizon) && okAt[i][j].After(need) {
					need = okAt[i][j]
				}
			}
			if need.IsZero() {
				continue
			}
			checked++
			key, _ := st.Key(s.ID)
			// 100ms: concurrent verifications of one key may store their
			// times out of order.
			if key.LastUsedAt == nil || key.LastUsedAt.Before(need.Add(-100*time.Millisecond)) {
				t.Errorf("round %d: key %s last verified (acknowledged) at %s, %s before the kill; on disk last_used_at=%v",
					round, s.ID, need.Format("15:04:05.000"), killed.Sub(need).Round(time.Millisecond), key.LastUsedAt)
			}
		}
		mu.Unlock()
		st.Close()
		if checked == 0 {
			t.Errorf("round %d: no verification was acknowledged before %s; the load did not run", round, horizon.Format("15:04:05.000"))
		}
		t.Logf("round %d: killed after %s of load: %d verifications, %d creates, last confirmed edit aaa-edit-%d, on disk %q",
			round, killed.Sub(loadStart).Round(time.Millisecond), verifies.Load(), len(createdRound), editAcked, tk.Name)
		totalVerifies += int(verifies.Load())
		totalCreates += len(createdRound)
		totalEdits = editAcked
	}
	if totalVerifies < 100 || totalCreates < 3 || totalEdits < 3 {
		t.Fatalf("the load was too thin to prove anything: %d verifications, %d creates, %d edits", totalVerifies, totalCreates, totalEdits)
	}
}
