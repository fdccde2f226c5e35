package agent

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// CAHash is how a join command pins the cluster CA: "sha256:" and the hex
// SHA-256 of the CA certificate's DER bytes (as kubeadm's
// --discovery-token-ca-cert-hash).
func CAHash(caPEM []byte) (string, error) {
	b, _ := pem.Decode(caPEM)
	if b == nil {
		return "", errors.New("CA: no PEM certificate")
	}
	h := sha256.Sum256(b.Bytes)
	return "sha256:" + hex.EncodeToString(h[:]), nil
}

// FetchCA connects to a server it does not trust yet, finds the CA in the
// certificate chain the server presents, checks it against the pinned
// hash, checks that the server's certificate was issued by it, and returns
// the CA in PEM. A server presenting anything else is refused.
func FetchCA(ctx context.Context, server, hash string) ([]byte, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("server %q is not an https:// URL", server)
	}
	// Hex digits in either case: tools print fingerprints in upper case.
	want := strings.ToLower(strings.TrimPrefix(hash, "sha256:"))
	if _, err := hex.DecodeString(want); err != nil || len(want) != 64 || !strings.HasPrefix(hash, "sha256:") {
		return nil, fmt.Errorf("CA hash %q is not sha256:<64 hex digits>", hash)
	}
	var found []byte
	cfg := &tls.Config{
		InsecureSkipVerify: true, // verified below against the pinned hash
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) < 2 {
				return errors.New("the server presents no CA certificate in its chain")
			}
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			for _, der := range raw[1:] {
				h := sha256.Sum256(der)
				if hex.EncodeToString(h[:]) != want {
					continue
				}
				ca, err := x509.ParseCertificate(der)
				if err != nil {
					return err
				}
				if err := leaf.CheckSignatureFrom(ca); err != nil {
					return fmt.Errorf("server certificate not issued by the pinned CA: %v", err)
				}
				found = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
				return nil
			}
			return errors.New("the server's CA does not match the pinned hash: wrong server, or a stale join command")
		},
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	d := &tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 10 * time.Second}}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("join %s: %w", server, err)
	}
	conn.Close()
	return found, nil
}

// FetchCAFrom is FetchCA from the first of servers that presents the
// pinned CA: a cluster's servers share one CA, and some of them may be
// down while a node joins.
func FetchCAFrom(ctx context.Context, servers []string, hash string) ([]byte, error) {
	if len(servers) == 0 {
		return nil, errors.New("join: no server")
	}
	var errs []error
	for _, srv := range servers {
		ca, err := FetchCA(ctx, srv, hash)
		if err == nil {
			return ca, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// SplitServers turns --server values (repeated, or comma-separated) into
// a list of server URLs, in order, without blanks or repeats.
func SplitServers(values []string) []string {
	var out []string
	for _, v := range values {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimRight(strings.TrimSpace(s), "/")
			if s != "" && !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}
