package workers

import (
	"sync"
	"testing"
)

// A function that blocks does not hold the others up: every function
// gets a worker, idle or new.
func TestBlockedWorkerHoldsNoneUp(t *testing.T) {
	p := New()
	release := make(chan struct{})
	var started sync.WaitGroup
	for range 10 {
		started.Add(1)
		p.Go(func() {
			started.Done()
			<-release
		})
	}
	started.Wait() // all ten run at once
	close(release)
	ran := 0
	for range 100 {
		p.Run(func() { ran++ })
	}
	if ran != 100 {
		t.Errorf("ran %d of 100 functions", ran)
	}
}

// A panic in Run's function is raised in Run's caller, which can recover
// it as if the function had run there.
func TestRunRaisesPanicInCaller(t *testing.T) {
	p := New()
	got := func() (v any) {
		defer func() { v = recover() }()
		p.Run(func() { panic("boom") })
		return nil
	}()
	if got != "boom" {
		t.Fatalf("recovered %v, want boom", got)
	}
	ok := false
	p.Run(func() { ok = true }) // the pool still works
	if !ok {
		t.Error("pool did not run a function after a panic")
	}
}
