package workflow

import "time"

// Step and run states, as recorded and shown by `skiff why`.
//
//	waiting ──► running ──► done
//	   │           ├──────► failed ──► (retry) running
//	   │           └──────► timed out ──► (retry) running
//	   ├──► skipped     (its reads did not change since its last success)
//	   ├──► failed      (dependency failed: X)
//	   └──► cancelled   (the run was superseded by a newer generation)
const (
	Waiting   = "waiting"
	Running   = "running"
	Done      = "done"
	Failed    = "failed"
	TimedOut  = "timed out"
	Skipped   = "skipped"
	Cancelled = "cancelled"
)

// Run states. A run is Running until every unit it pulled in has finished;
// then Done if its goal target was reached, else Failed. Superseded runs
// were replaced by a run for a newer generation before they finished.
const (
	RunRunning    = "running"
	RunDone       = "done"
	RunFailed     = "failed"
	RunSuperseded = "superseded"
)

// RunRecord is the record of one run: the transaction of every step and
// target the goal target pulled in, for one generation of one object. It is
// what `skiff why`, `skiff graph` and `skiff journal` render. Run records
// are not object revisions.
type RunRecord struct {
	ID         string `json:"id"`
	Object     string `json:"object"` // "pod/web"
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	Generation int64  `json:"generation"`
	Phase      string `json:"phase"`  // up or down
	Target     string `json:"target"` // the goal target
	State      string `json:"state"`
	Reason     string `json:"reason,omitempty"`
	// Cause says why a run started when it was not a new generation or a
	// deletion: a retry, or an eviction from the object's node.
	Cause    string       `json:"cause,omitempty"`
	Started  time.Time    `json:"started"`
	Finished *time.Time   `json:"finished,omitempty"`
	Steps    []StepRecord `json:"steps"`
}

// StepRecord is one unit of a run: a step, or a target (a sync point that
// is reached when everything ordered before it has finished).
type StepRecord struct {
	Name       string `json:"name"`
	Controller string `json:"controller,omitempty"` // empty for targets
	Target     bool   `json:"target,omitempty"`
	Where      string `json:"where,omitempty"` // cluster or node
	State      string `json:"state"`
	// Optional units were pulled in only by wants: their failure fails
	// nothing else.
	Optional  bool       `json:"optional,omitempty"`
	Started   *time.Time `json:"started,omitempty"`
	Finished  *time.Time `json:"finished,omitempty"`
	Attempts  int        `json:"attempts"`
	WaitingOn []string   `json:"waitingOn,omitempty"` // why a waiting unit has not started
	Reason    string     `json:"reason,omitempty"`    // why it failed, timed out or was skipped
	Log       []LogLine  `json:"log,omitempty"`       // last lines, bounded
	Writes    []string   `json:"writes,omitempty"`    // field paths written on success
	// The unit's edges inside this run, for graphs and the critical chain.
	After    []string `json:"after,omitempty"`
	Requires []string `json:"requires,omitempty"`
	Wants    []string `json:"wants,omitempty"`
	// ReadHash is the hash of the fields the step read when it last
	// succeeded; a later run skips the step while it is unchanged.
	ReadHash string `json:"readHash,omitempty"`
}

// LogLine is one structured log line of a step attempt.
type LogLine struct {
	Time    time.Time      `json:"time"`
	Attempt int            `json:"attempt,omitempty"`
	Msg     string         `json:"msg"`
	Attrs   map[string]any `json:"attrs,omitempty"`
}

// MaxLogLines bounds the log kept per step record.
const MaxLogLines = 50
