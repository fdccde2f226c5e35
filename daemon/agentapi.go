package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"skiff.dev/skiff/client"
	"skiff.dev/skiff/server"
)

// serveAgentAPI serves a node agent's own API (logs, exec, image imports)
// over TLS on listen, with a certificate the server signs for the node,
// to clients presenting a server certificate of the cluster CA. It returns
// the URL the server should call, once listening.
func serveAgentAPI(ctx context.Context, listen, address, node, dir string, c *client.Client, caPEM []byte, h http.Handler) (string, func(), error) {
	cert, err := nodeCertificate(ctx, dir, node, address, c)
	if err != nil {
		return "", nil, fmt.Errorf("agent API certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return "", nil, errors.New("agent API: no CA")
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
		VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
			if len(chains) == 0 || chains[0][0].Subject.CommonName != server.ServerCommonName {
				return errors.New("only skiff servers may call a node's API")
			}
			return nil
		},
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", nil, fmt.Errorf("agent API: %w", err)
	}
	srv := &http.Server{Handler: h, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
	go srv.ServeTLS(ln, "", "")
	port := ln.Addr().(*net.TCPAddr).Port
	host := address
	if host == "" {
		host = hostAddress(ln.Addr().(*net.TCPAddr).IP)
	}
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}
	return "https://" + net.JoinHostPort(host, fmt.Sprint(port)), stop, nil
}

// hostAddress picks the address a listener on ip is reached at: ip itself,
// or for a wildcard listener the first global unicast address.
func hostAddress(ip net.IP) string {
	if !ip.IsUnspecified() {
		return ip.String()
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
				return n.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// nodeCertificate returns the node's serving certificate, kept in
// DIR/tls, asking the server for a new one when there is none or it
// expires within 30 days.
func nodeCertificate(ctx context.Context, dir, node, address string, c *client.Client) (tls.Certificate, error) {
	tlsDir := filepath.Join(dir, "tls")
	certFile, keyFile := filepath.Join(tlsDir, "node.crt"), filepath.Join(tlsDir, "node.key")
	if cert, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil && time.Until(leaf.NotAfter) > 30*24*time.Hour {
			return cert, nil
		}
	}
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: server.NodeCommonName(node)}}
	for _, h := range server.Hosts("") {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if ip := net.ParseIP(address); ip != nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	certPEM, err := c.NodeCertificate(rctx, node, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		return tls.Certificate{}, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}
