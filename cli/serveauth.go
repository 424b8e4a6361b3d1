package cli

import (
	"net/netip"

	"github.com/keyward/keyward/server"
	"github.com/spf13/pflag"
)

// serveAuthHelp is the forward-auth part of serve's --help text.
const serveAuthHelp = `

Forward auth (/v1/auth, any method) answers gateways (nginx auth_request,
Caddy forward_auth, Traefik forwardAuth, Envoy ext_authz): 200 with
X-Keyward-Key-Id and X-Keyward-Role for a valid key, 401 or 403 for a
refused one, X-Keyward-Code always. The key comes from --auth-key-header
(X-API-Key) or else --auth-bearer-header (Authorization: Bearer); the
scope and resource from the auth URL: /v1/auth?scope=coupons:read&resource=web-shop.
The gateway must send the shared secret in X-Keyward-Secret or connect
from an --auth-trust network; otherwise it gets 500 (an error to every
gateway, not a refused key) and the refusal is logged. Configs for each
gateway: docs/gateways/.`

// authFlags are serve's forward-auth flags.
type authFlags struct {
	keyHeader, bearerHeader string
	trust                   []string
}

func (f *authFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.keyHeader, "auth-key-header", server.DefaultAuthKeyHeader, "/v1/auth: the header that carries the API key as it is")
	fl.StringVar(&f.bearerHeader, "auth-bearer-header", server.DefaultAuthBearerHeader, `/v1/auth: the header that carries "Bearer <API key>" (used when the key header is absent)`)
	fl.StringArrayVar(&f.trust, "auth-trust", nil, "/v1/auth: trust gateways connecting from this network (CIDR or address; repeatable) without X-Keyward-Secret")
}

// config checks the flags and returns the server's forward-auth config.
func (f *authFlags) config() (server.ForwardAuth, error) {
	c := server.ForwardAuth{KeyHeader: f.keyHeader, BearerHeader: f.bearerHeader}
	for _, s := range f.trust {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Zone() != "" {
				return c, usageErrorf("--auth-trust %q is not a network (10.0.0.0/8, fd00::/8) or an address", s)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		c.Trust = append(c.Trust, p.Masked())
	}
	if err := c.Check(); err != nil {
		return c, usageErrorf("--auth-key-header / --auth-bearer-header: %v", err)
	}
	return c, nil
}
