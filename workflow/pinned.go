package workflow

// PinnedDeploymentTargets are the built-in targets of PinnedDeployments:
//
//	up:   rolled-out
//	down: stopping → stopped
//
// A PinnedDeployment is rolled out when its pods match its split: the
// pinned controller's rollout step comes before rolled-out. Deleting one
// stops its pods first (stopping → stopped), then removes it.
func PinnedDeploymentTargets() []Target {
	return []Target{
		{Name: "rolled-out", Kind: "PinnedDeployment", Phase: Up},
		{Name: "stopping", Kind: "PinnedDeployment", Phase: Down},
		{Name: "stopped", Kind: "PinnedDeployment", Phase: Down, After: []string{"stopping"}, Requires: []string{"stopping"}},
	}
}
