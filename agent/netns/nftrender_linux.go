package netns

import (
	"bytes"
	"fmt"
	"math/bits"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// Rendering of nftables rules as `nft list` prints them, for the
// expressions skiff writes (and a few more); others show as [name].

type tableChain struct {
	chain *nftables.Chain
	rules []*nftables.Rule
}

func renderTable(t *nftables.Table, chains []tableChain) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", familyName(t.Family), t.Name)
	for i, c := range chains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", c.chain.Name)
		if c.chain.Hooknum != nil {
			policy := "accept"
			if c.chain.Policy != nil && *c.chain.Policy == nftables.ChainPolicyDrop {
				policy = "drop"
			}
			prio := 0
			if c.chain.Priority != nil {
				prio = int(*c.chain.Priority)
			}
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %s; policy %s;\n",
				c.chain.Type, hookName(*c.chain.Hooknum), priorityName(c.chain.Type, prio), policy)
		}
		for _, r := range c.rules {
			fmt.Fprintf(&b, "\t\t%s\n", renderRule(r))
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return fmt.Sprintf("family%d", f)
}

func hookName(h nftables.ChainHook) string {
	switch h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookInput:
		return "input"
	case *nftables.ChainHookForward:
		return "forward"
	case *nftables.ChainHookOutput:
		return "output"
	case *nftables.ChainHookPostrouting:
		return "postrouting"
	}
	return fmt.Sprint(uint32(h))
}

func priorityName(t nftables.ChainType, p int) string {
	names := map[int]string{-300: "raw", -150: "mangle", 0: "filter", 50: "security"}
	if t == nftables.ChainTypeNAT {
		names = map[int]string{-100: "dstnat", 100: "srcnat"}
	}
	if n, ok := names[p]; ok {
		return n
	}
	return fmt.Sprint(p)
}

// renderRule renders a rule's expressions, then its comment.
func renderRule(r *nftables.Rule) string {
	var parts []string
	var field string // what the last load put in the register
	maskBits := -1   // prefix length of the last bitwise mask; -1 for none
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Payload:
			field, maskBits = payloadName(e), -1
		case *expr.Meta:
			field, maskBits = metaName(e.Key), -1
		case *expr.Bitwise:
			maskBits = prefixBits(e.Mask)
		case *expr.Cmp:
			parts = append(parts, field+" "+cmpOp(e.Op)+cmpValue(field, e.Data, maskBits))
		case *expr.Masq:
			parts = append(parts, "masquerade")
		case *expr.Counter:
			parts = append(parts, fmt.Sprintf("counter packets %d bytes %d", e.Packets, e.Bytes))
		case *expr.Verdict:
			parts = append(parts, verdictName(e))
		default:
			name := strings.TrimPrefix(fmt.Sprintf("%T", e), "*expr.")
			parts = append(parts, "["+strings.ToLower(name)+"]")
		}
	}
	if c, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
		parts = append(parts, fmt.Sprintf("comment %q", c))
	}
	return strings.Join(parts, " ")
}

func payloadName(p *expr.Payload) string {
	switch {
	case p.Base == expr.PayloadBaseNetworkHeader && p.Offset == 12 && p.Len == 4:
		return "ip saddr"
	case p.Base == expr.PayloadBaseNetworkHeader && p.Offset == 16 && p.Len == 4:
		return "ip daddr"
	case p.Base == expr.PayloadBaseNetworkHeader && p.Offset == 9 && p.Len == 1:
		return "ip protocol"
	case p.Base == expr.PayloadBaseTransportHeader && p.Offset == 0 && p.Len == 2:
		return "th sport"
	case p.Base == expr.PayloadBaseTransportHeader && p.Offset == 2 && p.Len == 2:
		return "th dport"
	}
	base := map[expr.PayloadBase]string{expr.PayloadBaseLLHeader: "ll", expr.PayloadBaseNetworkHeader: "nh", expr.PayloadBaseTransportHeader: "th"}[p.Base]
	return fmt.Sprintf("@%s,%d,%d", base, p.Offset*8, p.Len*8)
}

func metaName(k expr.MetaKey) string {
	switch k {
	case expr.MetaKeyIIFNAME:
		return "iifname"
	case expr.MetaKeyOIFNAME:
		return "oifname"
	case expr.MetaKeyMARK:
		return "meta mark"
	case expr.MetaKeyL4PROTO:
		return "meta l4proto"
	}
	return fmt.Sprintf("meta key%d", k)
}

// prefixBits is the prefix length of a mask of leading ones, else -1.
func prefixBits(mask []byte) int {
	n := 0
	for i, b := range mask {
		if b == 0xff {
			n += 8
			continue
		}
		ones := bits.LeadingZeros8(^b)
		if b<<ones != 0 || !allZero(mask[i+1:]) {
			return -1
		}
		return n + ones
	}
	return n
}

func allZero(b []byte) bool { return len(bytes.Trim(b, "\x00")) == 0 }

func cmpOp(op expr.CmpOp) string {
	return map[expr.CmpOp]string{
		expr.CmpOpEq: "", expr.CmpOpNeq: "!= ", expr.CmpOpLt: "< ",
		expr.CmpOpLte: "<= ", expr.CmpOpGt: "> ", expr.CmpOpGte: ">= ",
	}[op]
}

func cmpValue(field string, data []byte, maskBits int) string {
	switch {
	case strings.HasPrefix(field, "ip ") && len(data) == 4:
		a := netip.AddrFrom4([4]byte(data))
		if maskBits >= 0 && maskBits < 32 {
			return netip.PrefixFrom(a, maskBits).String()
		}
		return a.String()
	case strings.HasSuffix(field, "ifname"):
		return fmt.Sprintf("%q", strings.TrimRight(string(data), "\x00"))
	case len(data) == 1:
		return fmt.Sprint(data[0])
	case len(data) == 2:
		return fmt.Sprint(uint16(data[0])<<8 | uint16(data[1]))
	}
	return fmt.Sprintf("0x%x", data)
}

func verdictName(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictContinue:
		return "continue"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	}
	return fmt.Sprintf("verdict%d", v.Kind)
}

// masqueradeRange finds the range of EnsureNode's rule: ip saddr PREFIX …
// masquerade.
func masqueradeRange(exprs []expr.Any) (netip.Prefix, bool) {
	var saddr netip.Prefix
	var field string
	maskBits := 32
	masq := false
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.Payload:
			field, maskBits = payloadName(e), 32
		case *expr.Bitwise:
			maskBits = prefixBits(e.Mask)
		case *expr.Cmp:
			if field == "ip saddr" && e.Op == expr.CmpOpEq && len(e.Data) == 4 && maskBits >= 0 && !saddr.IsValid() {
				saddr = netip.PrefixFrom(netip.AddrFrom4([4]byte(e.Data)), maskBits)
			}
		case *expr.Masq:
			masq = true
		}
	}
	return saddr, masq && saddr.IsValid()
}
