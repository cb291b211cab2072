package vmpool

import (
	"fmt"
	"os"
	"os/user"
	"strconv"

	"github.com/paddockvm/paddock/api/guestabi"
	"github.com/paddockvm/paddock/hypervisor"
)

// Names of a guest's shared directories inside its directory (docs/dataplane.md).
const (
	inShareName  = "in"
	outShareName = "out"
)

// DefaultShareUser is the user QEMU runs as under libvirt's system instance on Debian
// (qemu.conf `user`): the owner of every guest's output share.
const DefaultShareUser = "libvirt-qemu"

// shareOwner is who gets a guest's output share: QEMU's user (group root), so QEMU can
// create files in it, and no other unprivileged user can.
type shareOwner struct {
	uid, gid int
}

// lookupShareOwner resolves name (Config.ShareUser) to its uid; the group is root's.
func lookupShareOwner(name string) (shareOwner, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return shareOwner{}, fmt.Errorf("looking up share_user %q: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return shareOwner{}, fmt.Errorf("share_user %q has a non-numeric uid %q", name, u.Uid)
	}
	return shareOwner{uid: uid, gid: 0}, nil
}

// makeShares creates a guest's input share in and output share out and returns the
// devices exporting them. The input share is 0755 and the host's: QEMU (another user)
// only reads through it, and the host daemon stages world-readable hard links of its
// cache files into per-lease directories it makes 0755. The output share belongs to
// QEMU's user and group root (0700): QEMU creates the guest's files there (9p
// accessmode squash), the host daemon (root) reads them, other local users cannot.
// docs/dataplane.md, "Host-side recipe".
func makeShares(in, out string, owner *shareOwner) ([]hypervisor.Filesystem, error) {
	for _, s := range []struct {
		path string
		mode os.FileMode
	}{{in, 0o755}, {out, 0o700}} {
		if err := os.Mkdir(s.path, s.mode); err != nil {
			return nil, fmt.Errorf("creating shared directory %s: %w", s.path, err)
		}
		if err := os.Chmod(s.path, s.mode); err != nil { // the umask may have taken bits
			return nil, fmt.Errorf("setting the mode of shared directory %s: %w", s.path, err)
		}
	}
	if owner != nil {
		if err := os.Chown(out, owner.uid, owner.gid); err != nil {
			return nil, fmt.Errorf("giving the output share %s to QEMU's user (share_user): %w", out, err)
		}
	} else if err := os.Chmod(out, 0o777); err != nil {
		return nil, fmt.Errorf("making the output share %s writable: %w", out, err)
	}
	return []hypervisor.Filesystem{
		{Source: in, Tag: guestabi.InTag, ReadOnly: true},
		{Source: out, Tag: guestabi.OutTag},
	}, nil
}
