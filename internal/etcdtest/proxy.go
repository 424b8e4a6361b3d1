package etcdtest

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy on 127.0.0.1 in front of one etcd member, so one
// client (a keyward node) can be cut off from etcd. Blackhole(true) makes
// it behave like a network partition: connections stay open and no error
// reaches either side, but no byte passes in either direction, on existing
// or new connections. Bytes read meanwhile are held, not dropped, and pass
// after Blackhole(false), as TCP's retransmission would deliver them after
// a partition heals; while held, the proxy reads no more, so the sender's
// buffers fill as they would.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	gate   chan struct{}     // closed while traffic flows; open while blackholed
	conns  map[net.Conn]bool // true: the client's side
	closed chan struct{}
	wg     sync.WaitGroup
}

// NewProxy listens on a free 127.0.0.1 port and forwards to target
// (host:port, or a URL such as http://127.0.0.1:2379). It is closed at t's
// cleanup, with all its connections.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: proxy listen: %v", err)
	}
	gate := make(chan struct{})
	close(gate)
	p := &Proxy{
		ln:     ln,
		target: hostPort(target),
		gate:   gate,
		conns:  map[net.Conn]bool{},
		closed: make(chan struct{}),
	}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

func hostPort(s string) string {
	for _, scheme := range []string{"http://", "https://", "unix://"} {
		if len(s) > len(scheme) && s[:len(scheme)] == scheme {
			return s[len(scheme):]
		}
	}
	return s
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is http:// + Addr, an etcd client endpoint.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// Target is the host:port the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Blackhole cuts (on) or restores (off) all traffic through the proxy.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate: // flowing
		if on {
			p.gate = make(chan struct{})
		}
	default: // blackholed
		if !on {
			close(p.gate)
		}
	}
}

// Blackholed reports whether traffic is cut.
func (p *Proxy) Blackholed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		return false
	default:
		return true
	}
}

// Conns is the number of client connections open through the proxy.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, client := range p.conns {
		if client {
			n++
		}
	}
	return n
}

// Reset closes every connection through the proxy (bytes held by a
// blackhole are lost) and keeps listening: what a client sees when a long
// partition ends its connections (keepalive timeouts). Its reconnection
// then starts over, through the blackhole if it is still on.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// Close stops the proxy and closes every connection through it.
func (p *Proxy) Close() {
	p.mu.Lock()
	select {
	case <-p.closed:
		p.mu.Unlock()
		return
	default:
	}
	close(p.closed)
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// wait blocks while the proxy is blackholed; false once it is closed.
func (p *Proxy) wait() bool {
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	select {
	case <-gate:
		return true
	case <-p.closed:
		return false
	}
}

func (p *Proxy) track(c net.Conn, client bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.closed:
		c.Close()
		return false
	default:
	}
	p.conns[c] = client
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-p.closed:
				return
			case <-time.After(10 * time.Millisecond):
				continue
			}
		}
		p.wg.Add(1)
		go p.serve(in)
	}
}

// serve pairs an accepted connection with one to the target. The dial
// itself waits for the gate, so a new connection during a blackhole is
// accepted and then hears nothing, as a client behind a partition would.
func (p *Proxy) serve(in net.Conn) {
	defer p.wg.Done()
	if !p.track(in, true) {
		return
	}
	if !p.wait() {
		p.untrack(in)
		return
	}
	out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		// The member is down: the client sees its connection end, as it
		// would see a refused dial.
		p.untrack(in)
		return
	}
	if !p.track(out, false) {
		p.untrack(in)
		return
	}
	var once sync.Once
	end := func() { once.Do(func() { p.untrack(in, out) }) }
	p.wg.Add(2)
	go p.pump(out, in, end)
	go p.pump(in, out, end)
}

// pump copies src to dst, holding each chunk while blackholed.
func (p *Proxy) pump(dst, src net.Conn, end func()) {
	defer p.wg.Done()
	defer end()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.wait() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Reset resets every proxy of the set (see Proxy.Reset).
func (s *ProxySet) Reset() {
	for _, p := range s.proxies {
		p.Reset()
	}
}

// ProxySet is one Proxy per member of a cluster.
type ProxySet struct {
	proxies []*Proxy
}

// Proxies puts a proxy in front of every member (closed at t's cleanup).
// A client dialled to its Endpoints can be cut off with Blackhole.
func (c *Cluster) Proxies(t testing.TB) *ProxySet {
	t.Helper()
	s := &ProxySet{}
	for _, m := range c.members {
		s.proxies = append(s.proxies, NewProxy(t, m.clientURL))
	}
	return s
}

// Endpoints are the proxies' URLs, in member order.
func (s *ProxySet) Endpoints() []string {
	var eps []string
	for _, p := range s.proxies {
		eps = append(eps, p.URL())
	}
	return eps
}

// Proxy is the proxy in front of member i.
func (s *ProxySet) Proxy(i int) *Proxy { return s.proxies[i] }

// Blackhole cuts or restores traffic through every proxy of the set.
func (s *ProxySet) Blackhole(on bool) {
	for _, p := range s.proxies {
		p.Blackhole(on)
	}
}

// Conns is the number of client connections open through all proxies.
func (s *ProxySet) Conns() int {
	n := 0
	for _, p := range s.proxies {
		n += p.Conns()
	}
	return n
}
