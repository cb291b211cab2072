package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names under a dev PKI directory.
const (
	CAFile        = "ca.pem"
	CAKeyFile     = "ca-key.pem"
	ServerFile    = "server.pem"
	ServerKeyFile = "server-key.pem"
)

// CA is a certificate authority that can issue certificates.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// NewCA makes a self-signed CA valid for ten years.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: name, Organization: []string{"paddock"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("signing CA certificate: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Issue signs a leaf certificate for cn: a server certificate (for hosts, the DNS names
// or IPs it is reached by) when server is set, else a client certificate. It returns
// the certificate and key in PEM.
func (ca *CA) Issue(cn string, server bool, hosts ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating key for %s: %w", cn, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, Organization: []string{"paddock"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing certificate for %s: %w", cn, err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

// IssueHost returns a client certificate for host id hostID, ready for tls.Config.
func (ca *CA) IssueHost(hostID string) (tls.Certificate, error) {
	c, k, err := ca.Issue(hostID, false)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(c, k)
}

// Pool returns a cert pool holding the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// EnsureDevCA makes dir (0700) and, unless they exist, a CA and a server certificate
// for localhost, 127.0.0.1 and ::1 (plus extra names) in it; then loads the CA.
func EnsureDevCA(dir string, extra ...string) (*CA, error) {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return LoadCA(dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating dev PKI directory %s: %w", dir, err)
	}
	ca, err := NewCA("paddock dev CA")
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return nil, err
	}
	sc, sk, err := ca.Issue("paddock-server", true, append([]string{"localhost", "127.0.0.1", "::1"}, extra...)...)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{CAFile, ca.PEM}, {ServerFile, sc}, {ServerKeyFile, sk}, {CAKeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})}} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return nil, fmt.Errorf("writing %s: %w", filepath.Join(dir, f.name), err)
		}
	}
	return ca, nil
}

// LoadCA loads the CA (certificate and key) of a dev PKI directory.
func LoadCA(dir string) (*CA, error) {
	cb, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("reading the dev CA: %w (start `paddock server --dev` with the same data_dir first: it creates %s)", err, dir)
	}
	kb, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("reading the dev CA key: %w", err)
	}
	cblk, _ := pem.Decode(cb)
	kblk, _ := pem.Decode(kb)
	if cblk == nil || kblk == nil {
		return nil, fmt.Errorf("dev CA in %s: not PEM", dir)
	}
	cert, err := x509.ParseCertificate(cblk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", filepath.Join(dir, CAFile), err)
	}
	key, err := x509.ParseECPrivateKey(kblk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", filepath.Join(dir, CAKeyFile), err)
	}
	return &CA{Cert: cert, Key: key, PEM: cb}, nil
}

func loadPool(caFile, field string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, fmt.Errorf("%s is empty: give the CA certificate (PEM) that signed the peer's certificate", field)
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate", field, caFile)
	}
	return p, nil
}

func loadPair(certFile, keyFile, certField, keyField string) (tls.Certificate, error) {
	switch {
	case certFile == "":
		return tls.Certificate{}, fmt.Errorf("%s is empty: give a PEM certificate file", certField)
	case keyFile == "":
		return tls.Certificate{}, fmt.Errorf("%s is empty: give the PEM private key of %s", keyField, certField)
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loading %s / %s (%s, %s): %w", certField, keyField, certFile, keyFile, err)
	}
	return c, nil
}

// ServerConfig returns the cluster port's TLS config: cert, and client certificates
// required and verified against clientCAs.
func ServerConfig(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: clientCAs, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
}

// ClientConfig returns a host's TLS config: its certificate, and the server verified
// against rootCAs.
func ClientConfig(cert tls.Certificate, rootCAs *x509.CertPool) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: rootCAs, MinVersion: tls.VersionTLS13}
}

// ServerTLS loads the server side from files; the field names are for errors.
func ServerTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	c, err := loadPair(certFile, keyFile, "server.cluster_tls_cert", "server.cluster_tls_key")
	if err != nil {
		return nil, err
	}
	p, err := loadPool(caFile, "server.cluster_tls_ca")
	if err != nil {
		return nil, err
	}
	return ServerConfig(c, p), nil
}

// HostTLS loads a host's side from files; the field names are for errors.
func HostTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	c, err := loadPair(certFile, keyFile, "host.tls_cert", "host.tls_key")
	if err != nil {
		return nil, err
	}
	p, err := loadPool(caFile, "host.tls_ca")
	if err != nil {
		return nil, err
	}
	return ClientConfig(c, p), nil
}

// DevServerTLS returns the dev-mode server TLS config from dir (EnsureDevCA first).
func DevServerTLS(dir string) (*tls.Config, error) {
	ca, err := EnsureDevCA(dir)
	if err != nil {
		return nil, err
	}
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, ServerFile), filepath.Join(dir, ServerKeyFile))
	if err != nil {
		return nil, fmt.Errorf("loading the dev server certificate: %w", err)
	}
	return ServerConfig(c, ca.Pool()), nil
}

// DevHostTLS returns a dev-mode host TLS config: a fresh client certificate for hostID
// signed by the dev CA in dir.
func DevHostTLS(dir, hostID string) (*tls.Config, error) {
	ca, err := LoadCA(dir)
	if err != nil {
		return nil, err
	}
	c, err := ca.IssueHost(hostID)
	if err != nil {
		return nil, err
	}
	return ClientConfig(c, ca.Pool()), nil
}

// PeerCommonName returns the Common Name of the verified peer certificate of a TLS
// connection state.
func PeerCommonName(st tls.ConnectionState) (string, error) {
	if len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return "", errors.New("no verified client certificate")
	}
	return st.VerifiedChains[0][0].Subject.CommonName, nil
}
