package netns

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The node's nftables: table ip skiff, skiff's alone.
const (
	nftTable       = "skiff"
	nftChain       = "postrouting"
	egressComment  = "skiff: pod egress"
	ipv6Forwarding = "net/ipv6/conf/all/forwarding"
	ipv4Forwarding = "net/ipv4/ip_forward"
)

// EnsureNode sets up the node level: EnableForwarding and EnsureEgress.
func (h *Host) EnsureNode(cfg NodeConfig) error {
	if err := h.EnableForwarding(); err != nil {
		return err
	}
	return h.EnsureEgress(cfg.EgressRange)
}

// EnableForwarding turns IPv6 and IPv4 forwarding on.
func (h *Host) EnableForwarding() error {
	for _, name := range []string{ipv6Forwarding, ipv4Forwarding} {
		// Read first: writing the same value still walks every interface.
		if v, err := h.sysctl(name, ""); err == nil && v == "1" {
			continue
		}
		if _, err := h.sysctl(name, "1"); err != nil {
			return fmt.Errorf("%s: turn on forwarding: %w", h, err)
		}
	}
	return nil
}

// EnsureEgress makes table ip skiff: one nat chain masquerading traffic
// from the egress range (zero: DefaultEgressRange) to destinations outside
// it. The table's content is replaced in one nftables transaction, so
// running it again changes nothing and nothing ever sees the table half
// made.
func (h *Host) EnsureEgress(egress netip.Prefix) error {
	if !egress.IsValid() {
		egress = DefaultEgressRange
	}
	if !egress.Addr().Is4() || egress != egress.Masked() || egress.Bits() == 0 {
		return fmt.Errorf("%s: egress range %s: need an IPv4 prefix like %s, without host bits", h, egress, DefaultEgressRange)
	}
	c, err := h.nft()
	if err != nil {
		return fmt.Errorf("%s: nftables: %w", h, err)
	}
	// add, delete, add: the table exists for the delete, and what follows
	// starts from nothing.
	table := &nftables.Table{Name: nftTable, Family: nftables.TableFamilyIPv4}
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	chain := c.AddChain(&nftables.Chain{
		Name:     nftChain,
		Table:    table,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	mask := []byte(ipNet(egress).Mask)
	net := egress.Addr().AsSlice()
	c.AddRule(&nftables.Rule{
		Table: table,
		Chain: chain,
		Exprs: []expr.Any{
			// ip saddr 10.127.0.0/16
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net},
			// ip daddr != 10.127.0.0/16
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: net},
			&expr.Masq{},
		},
		UserData: userdata.AppendString(nil, userdata.TypeComment, egressComment),
	})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("%s: nftables: replace table ip %s: %w", h, nftTable, err)
	}
	return nil
}

// RemoveNode drops table ip skiff; forwarding stays on (turning it off
// would cut whatever else on the node routes). A missing table is no error.
func (h *Host) RemoveNode() error {
	c, err := h.nft()
	if err != nil {
		return fmt.Errorf("%s: nftables: %w", h, err)
	}
	c.DelTable(&nftables.Table{Name: nftTable, Family: nftables.TableFamilyIPv4})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%s: nftables: delete table ip %s: %w", h, nftTable, err)
	}
	return nil
}
