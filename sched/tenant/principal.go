package tenant

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// Principal is the caller of an API request, as its token says.
type Principal struct {
	// Tenant owns the tasks the caller submits; a non-admin caller sees only its tasks.
	Tenant string
	// Admin callers manage tokens, see every tenant's tasks and may act for a tenant.
	Admin bool
	// TokenID is the stored token's id ("" for the configured client token or dev mode).
	TokenID string
}

// Sees reports whether p may see (get, list, wait on, cancel, retry, read the logs
// of) a task of tenant owner.
func (p Principal) Sees(owner string) bool { return p.Admin || p.Tenant == owner }

type ctxKey struct{}

// With returns ctx carrying p.
func With(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// From returns the principal ctx carries and whether it carries one.
func From(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

// TokenPrefix starts every token New makes, so a leaked one is easy to recognise.
const TokenPrefix = "pdk_"

// New returns a new random token (256 bits) and its id (also random, not secret).
func New() (token, id string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("making a token: %w", err)
	}
	var i [8]byte
	if _, err := rand.Read(i[:]); err != nil {
		return "", "", fmt.Errorf("making a token id: %w", err)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), "tok_" + hex.EncodeToString(i[:]), nil
}

// Hash is what the store keeps of a token: its SHA-256, hex. A token has 256 random
// bits, so a plain hash is enough (no salt or slow hash needed) and lets the server
// find a token by its hash with one indexed read.
func Hash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// BearerToken returns the token of an Authorization header value ("Bearer <token>").
func BearerToken(header string) (string, bool) {
	tok, ok := strings.CutPrefix(header, "Bearer ")
	return tok, ok && tok != ""
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// NameRule says what a tenant name may be.
const NameRule = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"

// ValidName reports whether name is a valid tenant name.
func ValidName(name string) bool { return nameRE.MatchString(name) }
