package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// CA is the cluster's certificate authority. It is created once per cluster
// and kept in etcd, so every server of the cluster signs with the same one.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     *ecdsa.PrivateKey
}

type caRecord struct {
	Cert []byte `json:"cert"`
	Key  []byte `json:"key"`
}

// EnsureCA loads the cluster CA from etcd, creating it on first start.
func EnsureCA(ctx context.Context, kv *clientv3.Client, prefix string) (*CA, error) {
	key := prefix + "/pki/ca"
	resp, err := kv.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	if len(resp.Kvs) == 0 {
		rec, err := newCA()
		if err != nil {
			return nil, err
		}
		b, _ := json.Marshal(rec)
		// Only the first server to get here creates it.
		if _, err := kv.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(b))).Commit(); err != nil {
			return nil, fmt.Errorf("store CA: %w", err)
		}
		if resp, err = kv.Get(ctx, key); err != nil {
			return nil, fmt.Errorf("read CA: %w", err)
		}
	}
	var rec caRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return nil, fmt.Errorf("CA record damaged: %v", err)
	}
	return parseCA(rec)
}

func newCA() (caRecord, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return caRecord{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "skiff cluster CA " + time.Now().UTC().Format("2006-01-02")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return caRecord{}, err
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return caRecord{}, err
	}
	return caRecord{
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	}, nil
}

func parseCA(rec caRecord) (*CA, error) {
	cb, _ := pem.Decode(rec.Cert)
	kb, _ := pem.Decode(rec.Key)
	if cb == nil || kb == nil {
		return nil, errors.New("CA record damaged: no PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	return &CA{Cert: cert, CertPEM: rec.Cert, key: key}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// ServerCert returns this server's certificate from dir, issuing a new one
// when there is none, it is not from ca, it expires within 30 days, or it
// does not cover every name in hosts.
func (ca *CA) ServerCert(dir string, hosts []string) (tls.Certificate, error) {
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if c, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil && ca.covers(c, hosts) {
		return ca.withChain(c), nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	certPEM, keyPEM, err := ca.issue(ServerCommonName, hosts, 1, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return c, err
	}
	return ca.withChain(c), nil
}

// withChain appends the CA to the presented chain, so that a joining node
// can find it and check it against the hash its join command pins.
func (ca *CA) withChain(c tls.Certificate) tls.Certificate {
	c.Certificate = append(c.Certificate[:1:1], ca.Cert.Raw)
	return c
}

func (ca *CA) covers(c tls.Certificate, hosts []string) bool {
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil || time.Until(leaf.NotAfter) < 30*24*time.Hour {
		return false
	}
	if leaf.CheckSignatureFrom(ca.Cert) != nil {
		return false
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.Contains(leaf.DNSNames, h) {
			return false
		}
	}
	return true
}

// Hosts lists the names a server certificate should cover for a listen
// address: loopback names, this host's name and addresses, and the listen host.
func Hosts(listen string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
				hosts = append(hosts, ipn.IP.String())
			}
		}
	}
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// NodeCommonName is the subject of the certificates nodes serve their API
// with: "node:NAME".
func NodeCommonName(node string) string { return "node:" + node }

// ServerCommonName is the subject of server certificates; nodes accept
// API calls only from clients presenting one issued by the cluster CA.
const ServerCommonName = "skiff server"

// SignNode issues a node's serving certificate from its certificate
// request. The request's subject must be node:NAME; its names and
// addresses become the certificate's.
func (ca *CA) SignNode(csrPEM []byte, node string) ([]byte, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("no PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if csr.Subject.CommonName != NodeCommonName(node) {
		return nil, fmt.Errorf("certificate request is for %q, not %s", csr.Subject.CommonName, NodeCommonName(node))
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: NodeCommonName(node)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     csr.DNSNames,
		IPAddresses:  csr.IPAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
