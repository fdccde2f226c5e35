// Package workers runs functions on goroutines that outlive one call.
//
// A new goroutine starts on a small stack and grows it by copying as its
// calls go deep; a server's request or a workflow step goes deep (JSON,
// diffs, etcd's client) and paid for the growth again with every
// goroutine: at thousands of requests a second, more than some of the
// work itself. A goroutine of a Pool that finished a function waits a
// while for the next one, keeping its grown stack.
package workers

import "time"

// Idle is how long a worker waits for another function before it ends.
const Idle = 10 * time.Second

// Pool is a set of workers. There is no bound: a function that no idle
// worker takes gets a goroutine of its own (which then joins the pool),
// so functions that block never hold others up. The zero value is not
// usable; make one with New.
type Pool struct {
	idle chan func()
}

// New returns an empty pool.
func New() *Pool { return &Pool{idle: make(chan func())} }

// Go runs f on a worker and returns at once.
func (p *Pool) Go(f func()) {
	select {
	case p.idle <- f:
	default:
		go p.loop(f)
	}
}

// Run runs f on a worker and returns when it has. A panic of f is
// raised again in Run's goroutine, as if f had run there (net/http, for
// one, recovers a handler's panic in the handler's goroutine).
func (p *Pool) Run(f func()) {
	done := make(chan struct{})
	var panicked any
	p.Go(func() {
		defer close(done)
		defer func() { panicked = recover() }()
		f()
	})
	<-done
	if panicked != nil {
		panic(panicked)
	}
}

func (p *Pool) loop(f func()) {
	t := time.NewTimer(Idle)
	defer t.Stop()
	for {
		f()
		t.Reset(Idle)
		select {
		case f = <-p.idle:
		case <-t.C:
			return
		}
	}
}
