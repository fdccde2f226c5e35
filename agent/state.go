package agent

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"skiff.dev/skiff/api"
)

// state is the agent's local memory in a bbolt file: what it was asked to
// run and what it saw, so a node keeps its pods through agent restarts,
// cold boots and weeks without a control plane.
type state struct{ db *bolt.DB }

var (
	podsBucket = []byte("pods")
	metaBucket = []byte("meta")
)

// podRecord is one pod this node runs.
type podRecord struct {
	Namespace  string      `json:"namespace"`
	Name       string      `json:"name"`
	Generation int64       `json:"generation"`
	Spec       api.PodSpec `json:"spec"`
	// IDBase is the first host ID of the pod's user namespace range.
	IDBase uint32 `json:"idBase"`
	NetNS  string `json:"netns"`
	// IP is the pod's IPv6 address (status.ip), kept for cold boots.
	IP string `json:"ip,omitempty"`
	// Fenced marks a failover: fast pod stopped because the node reached
	// no server for longer than its lease (see fence.go); it stays
	// stopped until a server says it is still placed here.
	Fenced   bool      `json:"fenced,omitempty"`
	FencedAt time.Time `json:"fencedAt,omitempty"`
	// Containers by name.
	Containers map[string]*containerRecord `json:"containers"`
	// Status is the newest status computed, Uploaded whether the server
	// has it.
	Status   map[string]any `json:"status,omitempty"`
	Uploaded bool           `json:"uploaded"`
	// Pins are the images of the pod's last PinRevisions generations,
	// newest last: they stay on the node so a rollback never pulls.
	Pins [][]string `json:"pins,omitempty"`
	// Ungranted are privileges the pod runs with whose grant was removed,
	// as the server last said: its containers are not restarted.
	Ungranted []string `json:"ungranted,omitempty"`
}

// PinRevisions is how many generations of a pod keep their images pinned.
const PinRevisions = 3

// pin records the images of the pod's current spec.
func (p *podRecord) pin() {
	var imgs []string
	for _, c := range p.Spec.Containers {
		imgs = append(imgs, c.Image)
	}
	if n := len(p.Pins); n > 0 && fmt.Sprint(p.Pins[n-1]) == fmt.Sprint(imgs) {
		return
	}
	p.Pins = append(p.Pins, imgs)
	if len(p.Pins) > PinRevisions {
		p.Pins = p.Pins[len(p.Pins)-PinRevisions:]
	}
}

// containerRecord is what the agent remembers of one container.
type containerRecord struct {
	ID        string    `json:"id"`   // runtime container ID
	Hash      string    `json:"hash"` // of the config it runs
	Image     string    `json:"image"`
	Digest    string    `json:"digest,omitempty"`
	Restarts  int       `json:"restarts"`
	ExitCode  *int      `json:"exitCode,omitempty"`
	StartedAt time.Time `json:"startedAt,omitempty"`
	EndedAt   time.Time `json:"endedAt,omitempty"`
	// Backoff: when the next restart may happen.
	NextStart time.Time `json:"nextStart,omitempty"`
	Failures  int       `json:"failures"` // consecutive failed starts or crashes
	LastError string    `json:"lastError,omitempty"`
	Seq       int       `json:"seq"` // increments per start, part of ID
}

func openState(path string) (*state, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("agent state %s: %w (is another agent using this data directory?)", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{podsBucket, metaBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &state{db: db}, nil
}

func (s *state) close() error { return s.db.Close() }

func podKey(ns, name string) []byte { return []byte(ns + "/" + name) }

func (s *state) put(p *podRecord) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(podsBucket).Put(podKey(p.Namespace, p.Name), b)
	})
}

func (s *state) get(ns, name string) (*podRecord, error) {
	var p *podRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(podsBucket).Get(podKey(ns, name))
		if b == nil {
			return nil
		}
		p = &podRecord{}
		return json.Unmarshal(b, p)
	})
	return p, err
}

func (s *state) delete(ns, name string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(podsBucket).Delete(podKey(ns, name)) })
}

func (s *state) all() ([]*podRecord, error) {
	var out []*podRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(podsBucket).ForEach(func(k, v []byte) error {
			p := &podRecord{}
			if err := json.Unmarshal(v, p); err != nil {
				return fmt.Errorf("pod %s: %v", k, err)
			}
			out = append(out, p)
			return nil
		})
	})
	return out, err
}

// User namespace ranges: pod k gets host IDs [idBase0 + k*idRangeSize, +idRangeSize).
const (
	idBase0     = 1 << 20 // above the IDs a Debian host hands out to users
	idRangeSize = 65536
	idRanges    = 4096
)

// allocIDs returns a host ID range no other pod on this node uses.
func (s *state) allocIDs() (uint32, error) {
	used := map[uint32]bool{}
	pods, err := s.all()
	if err != nil {
		return 0, err
	}
	for _, p := range pods {
		used[p.IDBase] = true
	}
	for k := uint32(0); k < idRanges; k++ {
		if base := idBase0 + k*idRangeSize; !used[base] {
			return base, nil
		}
	}
	return 0, fmt.Errorf("no free user namespace range: %d pods on this node", len(pods))
}

// meta values.
func (s *state) getMeta(key string) string {
	var v string
	s.db.View(func(tx *bolt.Tx) error {
		v = string(tx.Bucket(metaBucket).Get([]byte(key)))
		return nil
	})
	return v
}

func (s *state) setMeta(key, value string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Put([]byte(key), []byte(value)) })
}
