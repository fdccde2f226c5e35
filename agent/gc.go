package agent

// ImageCollector is the optional ability of an image store to remove
// what no root reaches.
type ImageCollector interface {
	GC(roots []string) ([]string, error)
}

// collectImages removes images no pod on this node pins: every pod keeps
// the images of its last PinRevisions generations, so rolling back never
// waits on a pull, and those its spec asks to keep (spec.keepImages: a
// PinnedDeployment's pods keep both versions' images, so moving its share
// back to the other version does not pull either).
func (a *Agent) collectImages() {
	gc, ok := a.images.(ImageCollector)
	if !ok {
		return
	}
	pods, err := a.st.all()
	if err != nil {
		return
	}
	var roots []string
	for _, p := range pods {
		for _, gen := range p.Pins {
			roots = append(roots, gen...)
		}
		roots = append(roots, p.Spec.KeepImages...)
		for _, cr := range p.Containers {
			if cr.Digest != "" {
				roots = append(roots, cr.Digest)
			}
		}
	}
	removed, err := gc.GC(roots)
	if err != nil {
		a.log.Warn("image garbage collection", "err", err)
		return
	}
	if len(removed) > 0 {
		a.log.Info("images collected", "removed", len(removed))
	}
}
