package store

// etcdBackend keeps the records in an etcd v3 cluster (see the design
// brief, shared/ETCD.md). Several keyward processes share them, so
// Shared is true: the engine applies every change, its own included,
// from Watch.
//
// What the engine uses (OpenEtcd, etcd_sync.go):
//
//   - openEtcdBackend(cfg, &opts) dials and checks the cluster. fresh
//     reports an empty prefix: the engine then bootstraps with a Commit
//     whose InitAt is set; that Commit is conditioned on the schema
//     record not existing, so if another node bootstrapped first it gets
//     ErrConflict and should just Load.
//   - compactEvery / compactKeep tune the compaction goroutine (defaults
//     5 and 10 minutes); to change them, stopCompactor, set, startCompactor.
//   - nodeID names this process in audit keys.
//
// Key layout under cfg.Prefix (default "/keyward/"):
//
//	keys/<id>                 etcdRecV1, cur hash[32], hasPrev, prev hash[32], encodeKey(k)
//	names/<foldName(name)>    id (uniqueness: created only if absent)
//	lu/<id>                   8-byte big-endian Unix ns + source; created with the
//	                          key (all zero: never used), deleted with it, max-merged
//	meta/operators            every operator, one JSON array (one compare covers them)
//	meta/catalog, meta/shared_secret   as in the bbolt file
//	meta/schema               {"version":1,"created_at":...}
//	audit/<suffix>            event JSON; its "seq" holds the event's index in its commit
//	audit_target/<target>\x00<suffix>  empty: the per-target index
//	compact                   compaction coordination (brief §5)
//
// An audit suffix is <inverted ns, 16 hex>-<node, 8 hex>-<counter, 8 hex>-<inverted
// index, 2 hex>: ascending key order is newest first, so "the newest N"
// is a limited ascending range. The ns is this node's clock at commit,
// raised above every audit key this node has seen (its own and, through
// Watch, other nodes'), so an event made after seeing another sorts after
// it. Seq, as read, is CreateRevision<<8 | index: unique and increasing
// in commit order cluster-wide (a commit holds at most 128 ops).

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/keyward/keyward/model"
)

// etcdSchemaVersion is the layout above. A newer one is refused.
const etcdSchemaVersion = 1

// etcdRecV1 is the first byte of a keys/ value.
const etcdRecV1 = 1

// etcdRecHeader is the length of a keys/ value before encodeKey's bytes.
const etcdRecHeader = 1 + 32 + 1 + 32

// Transaction limits of etcd's defaults (--max-txn-ops, --max-request-bytes):
// a Write beyond them is refused before it is sent.
const (
	etcdMaxOps      = 128
	etcdMaxTxnBytes = 1536 * 1024
	// etcdImportBatch is how many keys an Import batch holds: 5 ops each
	// (record, name, last use, audit event and its index entry).
	etcdImportBatch = 25
	// etcdPage is the page size of lists: 100k, not the brief's 50k (§2.1),
	// faster to load 1M keys with the next page prefetched (BENCHMARKS.md).
	etcdPage = 100_000
)

// etcdBackend: see the top of this file.
type etcdBackend struct {
	cli    *clientv3.Client
	cfg    EtcdConfig
	prefix string
	fresh  bool
	nodeID string // 8 hex digits, random per process

	// wmu serialises this process's Commits and Imports: the ambiguity
	// resolution reads back a commit before the next starts.
	wmu     sync.Mutex
	counter atomic.Uint32
	// auditHigh is the greatest audit ns this process has written or
	// seen: new events sort after it.
	auditHigh atomic.Int64

	// Compaction (brief §5): every compactEvery, the rev recorded at
	// least compactKeep ago is compacted by the one node that wins the
	// round. 0 turns it off.
	compactEvery, compactKeep time.Duration
	// commitTimeout bounds one attempt of a transaction; ambiguousFor
	// bounds the resolution of an ambiguous commit.
	commitTimeout, ambiguousFor time.Duration
	// ambiguous counts transactions whose outcome had to be read back.
	ambiguous atomic.Int64

	ctx    context.Context // ends on Close
	cancel context.CancelFunc
	// stopCompact ends the compaction goroutine; compactDone closes
	// when it has.
	stopCompact context.CancelFunc
	compactDone chan struct{}
	wg          sync.WaitGroup
	once        sync.Once
}

var _ Backend = (*etcdBackend)(nil)

// openEtcdBackend dials the cluster named by cfg and reads its schema
// record. The compaction goroutine starts here.
func openEtcdBackend(cfg EtcdConfig, opts *Options) (*etcdBackend, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints given")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "/keyward/"
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	tlsCfg, err := etcdTLS(cfg)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		TLS:                  tlsCfg,
		Username:             cfg.Username,
		Password:             cfg.Password,
		Logger:               zap.NewNop(), // never onto the TUI's terminal
		MaxCallRecvMsgSize:   512 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	var id [4]byte
	_, _ = rand.Read(id[:])
	ctx, cancel := context.WithCancel(context.Background())
	b := &etcdBackend{cli: cli, cfg: cfg, prefix: cfg.Prefix, nodeID: hex.EncodeToString(id[:]),
		compactEvery: 5 * time.Minute, compactKeep: 10 * time.Minute,
		commitTimeout: 5 * time.Second, ambiguousFor: 30 * time.Second,
		ctx: ctx, cancel: cancel}
	if err := b.init(); err != nil {
		cancel()
		cli.Close()
		return nil, err
	}
	b.startCompactor()
	return b, nil
}

// diagnoseEndpoints says why the first endpoint refused, when the client
// only said its deadline passed: nothing listens, a TLS handshake fails
// (an unknown CA, a client certificate the cluster requires), or a plain
// http:// endpoint that speaks TLS. "" when it finds nothing wrong.
func diagnoseEndpoints(cfg EtcdConfig) string {
	if len(cfg.Endpoints) == 0 {
		return ""
	}
	ep := cfg.Endpoints[0]
	host := strings.TrimPrefix(strings.TrimPrefix(ep, "https://"), "http://")
	conn, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		return fmt.Sprintf(" (%s: %v)", ep, err)
	}
	defer conn.Close()
	tcfg, err := etcdTLS(cfg)
	if err != nil || tcfg == nil {
		// Plain text: does it speak TLS?
		probe := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) // only to see whether TLS answers
		probe.SetDeadline(time.Now().Add(2 * time.Second))
		if probe.Handshake() == nil {
			return fmt.Sprintf(" (%s answers TLS: use https:// and --etcd-cacert)", ep)
		}
		return ""
	}
	c := tcfg.Clone()
	if c.ServerName == "" {
		c.ServerName, _, _ = net.SplitHostPort(host)
	}
	tc := tls.Client(conn, c)
	tc.SetDeadline(time.Now().Add(2 * time.Second))
	if err := tc.Handshake(); err != nil {
		return fmt.Sprintf(" (TLS with %s: %v)", ep, err)
	}
	// TLS 1.3 servers refuse a missing client certificate after the
	// handshake: read for their alert.
	tc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	var b [1]byte
	if _, err := tc.Read(b[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Sprintf(" (TLS with %s: %v; give --etcd-cert and --etcd-key)", ep, err)
	}
	return ""
}

// etcdTLS builds the client TLS configuration of cfg (nil: plain text).
func etcdTLS(cfg EtcdConfig) (*tls.Config, error) {
	https := false
	for _, e := range cfg.Endpoints {
		https = https || strings.HasPrefix(e, "https://")
	}
	if cfg.CACert == "" && cfg.Cert == "" && cfg.Key == "" && !https {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CACert != "" {
		pem, err := os.ReadFile(cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("etcd CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA certificate %s: no PEM certificate in it", cfg.CACert)
		}
		t.RootCAs = pool
	}
	if (cfg.Cert == "") != (cfg.Key == "") {
		return nil, errors.New("etcd client TLS: give both a certificate and its key")
	}
	if cfg.Cert != "" {
		pair, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		t.Certificates = []tls.Certificate{pair}
	}
	return t, nil
}

// init checks the cluster answers and reads the schema record.
func (b *etcdBackend) init() error {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.DialTimeout)
	defer cancel()
	resp, err := b.cli.Get(ctx, b.prefix, clientv3.WithPrefix(), clientv3.WithLimit(1), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("etcd %s: cannot reach the cluster: %w%s", strings.Join(b.cfg.Endpoints, ","), err, diagnoseEndpoints(b.cfg))
	}
	if resp.Count == 0 {
		b.fresh = true
		return nil
	}
	sr, err := b.cli.Get(ctx, b.k("meta/schema"))
	if err != nil {
		return fmt.Errorf("etcd: reading the schema: %w", err)
	}
	if len(sr.Kvs) == 0 {
		return fmt.Errorf("etcd prefix %q: %w (it holds records but no keyward schema: another program's data, or an interrupted restore; refusing to touch it)", b.prefix, ErrForeign)
	}
	v, _, err := decodeEtcdSchema(sr.Kvs[0].Value)
	if err != nil {
		return fmt.Errorf("etcd prefix %q: %w", b.prefix, err)
	}
	if v > etcdSchemaVersion {
		return fmt.Errorf("etcd prefix %q: %w (schema %d; this build reads up to %d); upgrade keyward", b.prefix, ErrNewerSchema, v, etcdSchemaVersion)
	}
	// The newest audit event: new ones sort before it.
	ar, err := b.cli.Get(ctx, b.k("audit/"), clientv3.WithPrefix(), clientv3.WithLimit(1), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("etcd: reading the audit log: %w", err)
	}
	if len(ar.Kvs) == 1 {
		b.seeAudit(string(ar.Kvs[0].Key[len(b.k("audit/")):]))
	}
	return nil
}

// k is the etcd key of rel.
func (b *etcdBackend) k(rel string) string { return b.prefix + rel }

func (b *etcdBackend) keyKey(id string) string    { return b.prefix + "keys/" + id }
func (b *etcdBackend) nameKey(name string) string { return b.prefix + "names/" + foldName(name) }
func (b *etcdBackend) luKey(id string) string     { return b.prefix + "lu/" + id }
func (b *etcdBackend) metaKey(n MetaName) string  { return b.prefix + "meta/" + string(n) }
func (b *etcdBackend) opsKey() string             { return b.prefix + "meta/operators" }

// Shared is true: other nodes write the same records.
func (b *etcdBackend) Shared() bool { return true }

// schema record

type etcdSchema struct {
	Version int       `json:"version"`
	Created time.Time `json:"created_at"`
}

func encodeEtcdSchema(at time.Time) []byte {
	v, _ := json.Marshal(etcdSchema{Version: etcdSchemaVersion, Created: at.UTC()})
	return v
}

func decodeEtcdSchema(v []byte) (int, time.Time, error) {
	var s etcdSchema
	if err := json.Unmarshal(v, &s); err != nil || s.Version < 1 {
		return 0, time.Time{}, fmt.Errorf("%w (no schema version)", ErrForeign)
	}
	return s.Version, s.Created, nil
}

// key records

// encodeEtcdKey is the keys/ value of k with hashes h.
func encodeEtcdKey(k *model.Key, h KeyHashes) []byte {
	rec := encodeKey(k)
	b := make([]byte, 0, etcdRecHeader+len(rec))
	b = append(b, etcdRecV1)
	b = append(b, h.Cur[:]...)
	if h.HasPrev {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = append(b, h.Prev[:]...)
	return append(b, rec...)
}

// splitEtcdKey checks a keys/ value and returns its hashes and the
// encodeKey bytes (which point into v).
func splitEtcdKey(v []byte) (KeyHashes, []byte, error) {
	var h KeyHashes
	if len(v) < etcdRecHeader+1 || v[0] != etcdRecV1 || v[33] > 1 {
		return h, nil, errCorruptRecord
	}
	copy(h.Cur[:], v[1:33])
	h.HasPrev = v[33] == 1
	copy(h.Prev[:], v[34:66])
	return h, v[etcdRecHeader:], nil
}

// decodeEtcdKey decodes a keys/ value stored under id.
func decodeEtcdKey(id string, v []byte) (*model.Key, KeyHashes, error) {
	h, rec, err := splitEtcdKey(v)
	if err != nil {
		return nil, h, fmt.Errorf("etcd key record %q: %w", model.Sanitize(id), err)
	}
	k, err := decodeKey(rec, nil)
	if err != nil {
		return nil, h, fmt.Errorf("etcd key record %q: %w", model.Sanitize(id), err)
	}
	if k.ID != id {
		return nil, h, fmt.Errorf("etcd key record %q: %w (it holds key %q)", model.Sanitize(id), errCorruptRecord, model.Sanitize(k.ID))
	}
	return k, h, nil
}

// zeroLastUsed is the lu/ value of a key never used: it compares below
// every real time, so the max-merge replaces it.
var zeroLastUsed = make([]byte, 8)

// applyLastUsed sets k's last use from an lu/ value (none if zero or
// damaged: a damaged record is ignored, as the bbolt load ignores it).
func applyLastUsed(k *model.Key, v []byte) {
	at, from, err := decodeLastUsed(v)
	if err != nil || at == 0 {
		return
	}
	t := time.Unix(0, at).UTC()
	k.LastUsedAt, k.LastUsedFrom = &t, from
}

// operators

func decodeEtcdOperators(v []byte) ([]model.Operator, error) {
	if len(v) == 0 {
		return nil, nil
	}
	var ops []model.Operator
	if err := json.Unmarshal(v, &ops); err != nil {
		return nil, fmt.Errorf("etcd operators record: %w", err)
	}
	return ops, nil
}

// audit keys

// auditSuffix is the key suffix of event idx of a commit numbered ctr.
func (b *etcdBackend) auditSuffix(ns int64, ctr uint32, idx int) string {
	return fmt.Sprintf("%016x-%s-%08x-%02x", uint64(math.MaxUint64)-uint64(ns), b.nodeID, ctr, 0xff-idx)
}

// auditNS returns the ns an audit key suffix was written at.
func auditNS(suffix string) (int64, bool) {
	if len(suffix) < 16 {
		return 0, false
	}
	inv, err := strconv.ParseUint(suffix[:16], 16, 64)
	if err != nil {
		return 0, false
	}
	return int64(uint64(math.MaxUint64) - inv), true
}

// seeAudit raises auditHigh to the ns of an audit key suffix.
func (b *etcdBackend) seeAudit(suffix string) {
	ns, ok := auditNS(suffix)
	if !ok {
		return
	}
	for {
		cur := b.auditHigh.Load()
		if ns <= cur || b.auditHigh.CompareAndSwap(cur, ns) {
			return
		}
	}
}

// nextAuditNS returns an audit ns after every one seen, at least at.
func (b *etcdBackend) nextAuditNS(at int64) int64 {
	for {
		cur := b.auditHigh.Load()
		ns := max(at, cur+1)
		if b.auditHigh.CompareAndSwap(cur, ns) {
			return ns
		}
	}
}

// encodeAuditValue is the stored form of event idx of a commit.
func encodeAuditValue(ev model.AuditEvent, idx int) []byte {
	ev.Seq = uint64(idx)
	ev.Actor = model.Sanitize(ev.Actor)
	ev.Detail = model.Sanitize(ev.Detail)
	v, _ := json.Marshal(ev)
	return v
}

// decodeAuditValue reads an audit/ value; its Seq becomes the
// cluster-wide one.
func decodeAuditValue(key []byte, v []byte, createRev int64) (model.AuditEvent, error) {
	var ev model.AuditEvent
	if err := json.Unmarshal(v, &ev); err != nil || ev.Seq > 0xff {
		return ev, fmt.Errorf("etcd audit record %q: %w", model.Sanitize(string(key)), errCorruptRecord)
	}
	ev.Seq = uint64(createRev)<<8 | ev.Seq
	return ev, nil
}

// be64 is the big-endian form of v.
func be64(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

// Close stops the compaction and watches, and closes the client.
func (b *etcdBackend) Close() error {
	var err error
	b.once.Do(func() {
		b.cancel()
		b.stopCompactor()
		b.wg.Wait()
		err = b.cli.Close()
	})
	return err
}
