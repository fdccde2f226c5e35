package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"skiff.dev/skiff/store"
)

// The CA of a cluster of servers exists before etcd does: the members'
// peer certificates come from it. `skiff server pki` makes it (NewCA) and
// a peer certificate per member (PeerCert), and every member's bundle
// carries the CA's key; whichever server reaches etcd first stores it there
// (AdoptCA), so that the CA in etcd, the one EnsureCA returns, is the one
// the peers trust.

// NewCA makes a cluster CA outside etcd.
func NewCA() (*CA, error) {
	rec, err := newCA()
	if err != nil {
		return nil, err
	}
	return parseCA(rec)
}

// KeyPEM is the CA's private key, PEM encoded.
func (ca *CA) KeyPEM() []byte {
	kb, _ := x509.MarshalECPrivateKey(ca.key)
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// PeerCert issues an etcd peer certificate (store.PeerCommonName, for
// serving and dialling peers) covering hosts, the hosts of the member's
// peer URLs. It returns the certificate and its key, PEM encoded.
func (ca *CA) PeerCert(hosts []string) (certPEM, keyPEM []byte, err error) {
	return ca.issue(store.PeerCommonName, hosts, 10, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
}

// issue makes a key and a certificate for it from the CA: subject cn,
// names and addresses hosts, valid for years, for usages. It returns both,
// PEM encoded.
func (ca *CA) issue(cn string, hosts []string, years int, usages ...x509.ExtKeyUsage) (certPEM, keyPEM []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(years, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usages,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &k.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

// AdoptCA returns the cluster CA, making sure it is the one a peer bundle
// carries: with keyPEM (a new cluster's bundle) it is stored in etcd unless
// a CA is there already; either way, a CA in etcd other than certPEM is an
// error (the bundle belongs to another cluster).
func AdoptCA(ctx context.Context, kv *clientv3.Client, prefix string, certPEM, keyPEM []byte) (*CA, error) {
	if len(keyPEM) > 0 {
		if _, err := parseCA(caRecord{Cert: certPEM, Key: keyPEM}); err != nil {
			return nil, fmt.Errorf("peer bundle: %w", err)
		}
		b, _ := json.Marshal(caRecord{Cert: certPEM, Key: keyPEM})
		key := prefix + "/pki/ca"
		if _, err := kv.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(b))).Commit(); err != nil {
			return nil, fmt.Errorf("store CA: %w", err)
		}
	}
	ca, err := EnsureCA(ctx, kv, prefix)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(bytes.TrimSpace(ca.CertPEM), bytes.TrimSpace(certPEM)) {
		return nil, errors.New("the cluster CA in etcd is not the one in this server's peer bundle: the bundle was made for another cluster")
	}
	return ca, nil
}
