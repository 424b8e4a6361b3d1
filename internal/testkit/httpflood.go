package testkit

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// HealthzReq is a keep-alive GET /healthz, as raw HTTP/1.1.
const HealthzReq = "GET /healthz HTTP/1.1\r\nHost: flood\r\n\r\n"

// RawRoundTrip sends one request on c and reads the answer (5 s deadline).
func RawRoundTrip(c net.Conn, req string) (int, []byte, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, req); err != nil {
		return 0, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Flood opens n keep-alive connections to addr from workers goroutines,
// each sending GET /healthz and then idling (held open until the returned
// close is called). It returns how many got their 200. Bounded: n
// connections, 5 s deadlines.
func Flood(addr string, n, workers int) (ok int64, conns []net.Conn, closeAll func()) {
	var mu sync.Mutex
	var good atomic.Int64
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				if code, _, err := RawRoundTrip(c, HealthzReq); err == nil && code == 200 {
					good.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return good.Load(), conns, func() {
		for _, c := range conns {
			c.Close()
		}
	}
}
