package netns

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
)

// KeepHost saves what an agent running in the calling process's network
// namespace changes there for its pods (forwarding, table ip skiff, the
// unreachable route for its pod /64; pod veths and their routes go with
// the pods) and returns a function that puts it back. Tests and benches
// that run an agent in the machine's own namespace use it.
func KeepHost() (restore func() error, err error) {
	sysctls := []string{"/proc/sys/" + ipv6Forwarding, "/proc/sys/" + ipv4Forwarding}
	saved := map[string][]byte{}
	for _, f := range sysctls {
		if b, err := os.ReadFile(f); err == nil {
			saved[f] = b
		}
	}
	h, err := Open("")
	if err != nil {
		return nil, err
	}
	before, err := h.State()
	if err != nil {
		h.Close()
		return nil, err
	}
	return func() error {
		defer h.Close()
		var errs []error
		for f, b := range saved {
			if cur, err := os.ReadFile(f); err == nil && !bytes.Equal(cur, b) {
				errs = append(errs, os.WriteFile(f, b, 0o644))
			}
		}
		if before.NFT == "" {
			errs = append(errs, h.RemoveNode())
		}
		if len(before.Routes) == 0 {
			_, err := h.SyncRoutes(netip.Prefix{}, nil)
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}, nil
}
