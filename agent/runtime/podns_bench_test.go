package runtime

import (
	"fmt"
	"testing"
)

// BenchmarkCreatePodNetNS measures a pod's network namespace, owned by a
// user namespace of its own: the holder process, the pins, loopback up.
func BenchmarkCreatePodNetNS(b *testing.B) {
	needRoot(b)
	r, _ := newTestRuntime(b)
	for i := 0; b.Loop(); i++ {
		name := fmt.Sprintf("bench-%d", i)
		if _, err := r.CreatePodNetNS(name, testUserNS()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		r.RemovePodNetNS(name)
		b.StartTimer()
	}
}
