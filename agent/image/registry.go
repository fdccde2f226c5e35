package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// parseRef parses a reference the way docker does ("busybox" is
// docker.io/library/busybox:latest).
func parseRef(ref string, opts ...name.Option) (name.Reference, error) {
	if ref == "" {
		return nil, errors.New("empty reference")
	}
	return name.ParseReference(ref, opts...)
}

// normalize spells a reference fully: registry (docker.io, not
// index.docker.io), repository, and tag or digest.
func normalize(r name.Reference) string {
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	repo := reg + "/" + r.Context().RepositoryStr()
	if d, ok := r.(name.Digest); ok {
		return repo + "@" + d.DigestStr()
	}
	return repo + ":" + r.Identifier()
}

// Pull makes the image ref available locally and returns it.
//
// A digest reference ("app@sha256:...", or a bare "sha256:..." already in
// the store) present locally is returned without network access. A tag is
// always resolved against its registry, and only what is missing is
// downloaded; if the registry cannot be reached (network errors, HTTP 5xx,
// 408 and 429) but the store knows the name, the local image is returned
// and nothing is logged: nodes must keep running without network. A
// registry's definite answer (manifest unknown, unauthorized) is an error.
// For a multi-platform index the linux/GOARCH manifest is used.
func (s *Store) Pull(ctx context.Context, ref string) (Image, error) {
	if validDigest(ref) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if d, ok := s.resolveDigest(ref); ok {
			img, _ := s.image("", d)
			return img, nil
		}
		return Image{}, errorf("pull", ref, nil, "not in the store, and a bare digest names no registry to pull it from")
	}
	r, err := parseRef(ref)
	if err != nil {
		return Image{}, errorf("pull", ref, err, "invalid reference: %v", err)
	}
	n := normalize(r)
	if s.insecure[r.Context().RegistryStr()] {
		if r, err = parseRef(ref, name.Insecure); err != nil {
			return Image{}, errorf("pull", ref, err, "invalid reference: %v", err)
		}
	}
	v, err := s.flights.do("pull "+n, func() (any, error) {
		s.gcMu.RLock()
		defer s.gcMu.RUnlock()
		img, err := s.pull(ctx, r, n)
		if err != nil {
			return nil, wrap("pull", n, err)
		}
		return img, nil
	})
	if err != nil {
		return Image{}, err
	}
	return v.(Image), nil
}

func (s *Store) pull(ctx context.Context, r name.Reference, n string) (Image, error) {
	if _, ok := r.(name.Digest); ok {
		if img, ok := s.localName(n, r); ok {
			return img, nil
		}
	}
	reg := r.Context().RegistryStr()
	guard := &httpsOnly{base: s.transport, insecure: s.insecure}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(guard),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(wantPlatform()),
		remote.WithUserAgent("skiff"),
	}
	desc, err := remote.Get(r, opts...)
	if err != nil {
		if ctx.Err() == nil && unreachable(err) {
			if img, ok := s.localName(n, r); ok {
				return img, nil
			}
			return Image{}, errorf("pull", n, err, "%s, and the image is not in the store", describe(reg, err, guard))
		}
		return Image{}, errorf("pull", n, err, "%s", describe(reg, err, guard))
	}

	src := source{names: []string{n}}
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return Image{}, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return Image{}, err
		}
		child, err := pickPlatform(im)
		if err != nil {
			return Image{}, err
		}
		src.alias = desc.Digest.String()
		if img, ok := s.adopt(n, child.Digest.String(), src.alias); ok {
			return img, nil
		}
		if src.img, err = idx.Image(child.Digest); err != nil {
			return Image{}, errorf("pull", n, err, "%s", describe(reg, err, guard))
		}
	case desc.MediaType.IsImage():
		if img, ok := s.adopt(n, desc.Digest.String(), ""); ok {
			return img, nil
		}
		if src.img, err = desc.Image(); err != nil {
			return Image{}, errorf("pull", n, err, "%s", describe(reg, err, guard))
		}
	default:
		return Image{}, fmt.Errorf("unsupported manifest media type %s", desc.MediaType)
	}
	imgs, err := s.ingest(ctx, src)
	if err != nil {
		if !isRegistryErr(err) {
			return Image{}, err
		}
		// The registry went away mid-download: as when it cannot be
		// reached at all, the local copy (of the tag's old digest) will do.
		if ctx.Err() == nil && unreachable(err) {
			if img, ok := s.localName(n, r); ok {
				return img, nil
			}
		}
		return Image{}, errorf("pull", n, err, "%s", describe(reg, err, guard))
	}
	return imgs[0], nil
}

// localName returns the local image for n, by name or digest.
func (s *Store) localName(n string, r name.Reference) (Image, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img, ok := s.lookup(n, r)
	if ok {
		if _, named := s.idx.Names[n]; !named {
			s.idx.Names[n] = img.Digest
			s.save()
		}
	}
	return img, ok
}

// adopt records n (and alias) for manifest d if d is already unpacked.
func (s *Store) adopt(n, d, alias string) (Image, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idx.Images[d] == nil {
		return Image{}, false
	}
	changed := s.idx.Names[n] != d
	s.idx.Names[n] = d
	if alias != "" && s.idx.Aliases[alias] != d {
		s.idx.Aliases[alias] = d
		changed = true
	}
	if changed {
		if err := s.save(); err != nil {
			return Image{}, false
		}
	}
	return s.image(n, d)
}

// pickPlatform picks the manifest for this node from an index.
func pickPlatform(im *v1.IndexManifest) (v1.Descriptor, error) {
	want := wantPlatform()
	best, score := -1, 0
	var have []string
	for i, m := range im.Manifests {
		if m.Platform == nil {
			continue
		}
		have = append(have, m.Platform.String())
		if m.Platform.OS != want.OS || m.Platform.Architecture != want.Architecture || !m.MediaType.IsImage() {
			continue
		}
		sc := 1
		if m.Platform.Variant == want.Variant {
			sc = 2
		}
		if sc > score {
			best, score = i, sc
		}
	}
	if best < 0 {
		return v1.Descriptor{}, fmt.Errorf("no %s/%s image in the index (it has %s)", want.OS, want.Architecture, strings.Join(have, ", "))
	}
	return im.Manifests[best], nil
}

// unreachable reports whether err means the registry could not be reached
// or could not answer, as opposed to a definite answer.
func unreachable(err error) bool {
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode >= 500 || terr.StatusCode == http.StatusRequestTimeout || terr.StatusCode == http.StatusTooManyRequests
	}
	var uerr *url.Error
	var nerr net.Error
	return errors.As(err, &uerr) || errors.As(err, &nerr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

func isRegistryErr(err error) bool {
	var terr *transport.Error
	var uerr *url.Error
	return errors.As(err, &terr) || errors.As(err, &uerr)
}

// describe turns a registry client error into a short reason.
func describe(reg string, err error, guard *httpsOnly) string {
	var terr *transport.Error
	if errors.As(err, &terr) {
		var msgs []string
		for _, d := range terr.Errors {
			m := d.Message
			if m == "" {
				m = strings.ToLower(strings.ReplaceAll(string(d.Code), "_", " "))
			}
			msgs = append(msgs, m)
		}
		if len(msgs) > 0 {
			return strings.Join(msgs, "; ")
		}
		return fmt.Sprintf("registry answered HTTP %d %s", terr.StatusCode, http.StatusText(terr.StatusCode))
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		reason := oneLine(uerr.Err.Error())
		if guard.refused.Load() {
			return fmt.Sprintf("HTTPS to %s failed (%s) and plain HTTP is refused: the registry is not in Options.Insecure", reg, reason)
		}
		return fmt.Sprintf("registry %s unreachable: %s", reg, reason)
	}
	return oneLine(err.Error())
}

// errPlainHTTP is what httpsOnly answers for plain HTTP requests.
var errPlainHTTP = errors.New("plain HTTP refused: registry not in Options.Insecure")

// httpsOnly refuses plain HTTP requests to hosts not in the insecure list.
// go-containerregistry falls back to HTTP for loopback and private
// addresses on its own; this is what makes "HTTPS only" hold for them, and
// for redirects.
type httpsOnly struct {
	base     http.RoundTripper
	insecure map[string]bool
	refused  atomic.Bool
}

func (t *httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !t.insecure[req.URL.Host] {
		t.refused.Store(true)
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errPlainHTTP
	}
	return t.base.RoundTrip(req)
}
