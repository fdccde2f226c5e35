package netns

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkSetupPod measures connecting a new pod netns: the veth, the
// addresses and routes on both sides, the sysctl. Making and removing the
// netns are not timed; TeardownPod is reported apart as teardown-ns/op.
func BenchmarkSetupPod(b *testing.B) {
	requireRoot(b)
	h := openHost(b, newNetNS(b))
	if err := h.EnsureNode(NodeConfig{}); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	var teardown time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns, remove, err := makeNetNS(dir)
		if err != nil {
			b.Fatal(err)
		}
		p := benchPod(ns, i)
		b.StartTimer()
		if err := h.SetupPod(p); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		start := time.Now()
		if err := h.TeardownPod(p.HostVeth); err != nil {
			b.Fatal(err)
		}
		teardown += time.Since(start)
		remove()
		b.StartTimer()
	}
	b.ReportMetric(float64(teardown.Nanoseconds())/float64(b.N), "teardown-ns/op")
}

// BenchmarkSetupPodNoop measures SetupPod on a pod already set up, what the
// agent does for each pod it finds again.
func BenchmarkSetupPodNoop(b *testing.B) {
	requireRoot(b)
	h := openHost(b, newNetNS(b))
	p := benchPod(newPodNetNS(b), 1)
	if err := h.SetupPod(p); err != nil {
		b.Fatal(err)
	}
	idx := podLinks(b, p.NetNS)["eth0"].Attrs().Index
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := h.SetupPod(p); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if podLinks(b, p.NetNS)["eth0"].Attrs().Index != idx {
		b.Fatal("SetupPod remade a pod that was set up")
	}
}

func benchPod(ns string, i int) Pod {
	i++ // not the subnet-router anycast address
	return Pod{
		NetNS:    ns,
		HostVeth: VethName("bench", fmt.Sprint(i)),
		IPv6:     netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 14: byte(i >> 8), 15: byte(i)}),
		IPv4:     netip.AddrFrom4([4]byte{10, 127, byte(i >> 8), byte(i)}),
	}
}
