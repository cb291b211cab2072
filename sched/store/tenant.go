package store

import (
	"context"
	"time"
)

// TenantStore keeps the client tokens (by the SHA-256 of the token, never the token
// itself) and answers the server's per-tenant questions: how many tasks a tenant has
// in a state (limits), which of its tasks are ready (fair sharing), and what its
// attempts used (accounting).
type TenantStore interface {
	// CreateToken stores tok. A token with the same ID or Hash is an error wrapping
	// ErrConflict.
	CreateToken(ctx context.Context, tok Token) error
	// TokenByHash returns the token whose Hash is hash (revoked or not), or an error
	// wrapping ErrNotFound.
	TokenByHash(ctx context.Context, hash string) (Token, error)
	// Tokens returns every stored token, revoked ones included, oldest first.
	Tokens(ctx context.Context) ([]Token, error)
	// RevokeToken marks token id revoked at at (a token already revoked keeps its first
	// revocation time) and returns it, or an error wrapping ErrNotFound.
	RevokeToken(ctx context.Context, id string, at time.Time) (Token, error)
	// CountTenant counts the tasks of tenant in state st.
	CountTenant(ctx context.Context, tenant string, st State) (int64, error)
	// ReadyTenant is Ready for the tasks of one tenant.
	ReadyTenant(ctx context.Context, typ, tenant string, now time.Time, limit int) ([]Task, error)
	// Usage sums the attempts that finished at or after since, by tenant (only tenant's
	// when tenant is not ""), sorted by tenant. Attempts deleted by retention (with their
	// task) are no longer counted.
	Usage(ctx context.Context, tenant string, since time.Time) ([]TenantUsage, error)
}

// Token is one client token as stored. The token's text is shown once, when it is
// created; the store keeps only its SHA-256 (Hash, hex).
type Token struct {
	ID     string
	Tenant string
	// Admin tokens may manage tokens, see every tenant's tasks and act for any tenant.
	Admin     bool
	Hash      string
	CreatedAt time.Time
	RevokedAt time.Time // zero while the token is valid
}

// Revoked reports whether the token was revoked.
func (t Token) Revoked() bool { return !t.RevokedAt.IsZero() }

// TenantUsage is the sum of a tenant's finished attempts.
type TenantUsage struct {
	Tenant   string
	Attempts int64
	Wall     time.Duration
	CPU      time.Duration
	// MemoryByteMillis is the sum over attempts of the memory of the agent (guest) that
	// ran it, in bytes, times the attempt's wall time in milliseconds.
	MemoryByteMillis float64
	BytesIn          int64
	BytesOut         int64
}

// GiBSeconds is MemoryByteMillis in GiB-seconds.
func (u TenantUsage) GiBSeconds() float64 { return u.MemoryByteMillis / (1 << 30) / 1000 }
