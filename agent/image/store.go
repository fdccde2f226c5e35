package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultMaxUnpackBytes is the unpack limit when Options.MaxUnpackBytes is 0.
const DefaultMaxUnpackBytes int64 = 8 << 30

// Options configure a Store; zero values are documented defaults.
type Options struct {
	// Dir is the cache root (required): blobs, unpacked root filesystems
	// and the index live under it. It is created if missing.
	Dir string
	// Insecure lists registries ("127.0.0.1:5000") reached over plain
	// HTTP. All others are reached over HTTPS only, loopback and private
	// addresses included; so are token servers and redirect targets, which
	// must be listed too to be reached over plain HTTP.
	Insecure []string
	// MaxUnpackBytes refuses images whose layers unpack to more than this
	// many bytes (the uncompressed layer streams, all layers together).
	// 0 means DefaultMaxUnpackBytes.
	MaxUnpackBytes int64
}

// Image is an image present in the store, unpacked.
type Image struct {
	// Name is the reference as the user wrote it, normalized
	// ("docker.io/library/busybox:1", "127.0.0.1:5000/app@sha256:...").
	// Images looked up by bare digest and known under no name carry the
	// digest here.
	Name string
	// Digest is the image manifest digest ("sha256:..."); for a
	// multi-platform image it is the digest of the linux/GOARCH manifest.
	Digest string
	Config Config
	// Rootfs is the absolute path of the unpacked root filesystem. It is
	// shared by every name of the image and must be treated as read-only
	// (an overlayfs lower directory).
	Rootfs string
	// Size is the number of bytes of the unpacked files.
	Size int64
	// Skipped counts the device nodes and FIFOs in the layers, which are
	// not created (containers get their devices from the runtime).
	Skipped int
}

// Config is the part of the image configuration a container runtime needs.
type Config struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// Store is a node's image cache. It is safe for concurrent use; concurrent
// pulls of the same image share one download. One Store should own a Dir:
// Open clears the Dir's temporary files.
type Store struct {
	dir       string
	max       int64
	insecure  map[string]bool
	transport http.RoundTripper

	// gcMu is held shared by Pull and Import for their whole run and
	// exclusively by GC, so GC never removes what a pull is writing.
	gcMu sync.RWMutex

	mu  sync.Mutex // guards idx and index.json
	idx *index

	flights flightGroup
}

// index is the store's catalogue, index.json.
type index struct {
	Version int `json:"version"`
	// Names maps normalized references to manifest digests.
	Names map[string]string `json:"names"`
	// Images maps manifest digests to what the store knows about them.
	Images map[string]*record `json:"images"`
	// Aliases maps digests of multi-platform indexes to the digest of
	// the manifest picked for this node.
	Aliases map[string]string `json:"aliases,omitempty"`
}

type record struct {
	Config  Config `json:"config"`
	Size    int64  `json:"size"`
	Skipped int    `json:"skipped,omitempty"`
	// Blobs are the manifest, config and layer digests.
	Blobs []string `json:"blobs"`
}

const indexFile = "index.json"

// Open opens (creating if needed) the store in o.Dir. It removes temporary
// files left by a crash and forgets index entries whose root filesystem is
// gone.
func Open(o Options) (*Store, error) {
	if o.Dir == "" {
		return nil, errors.New("image store: Options.Dir is required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	s := &Store{dir: dir, max: o.MaxUnpackBytes, insecure: map[string]bool{}}
	if s.max <= 0 {
		s.max = DefaultMaxUnpackBytes
	}
	for _, r := range o.Insecure {
		reg, err := name.NewRegistry(r)
		if err != nil {
			return nil, fmt.Errorf("image store: Options.Insecure: %q: %w", r, err)
		}
		s.insecure[reg.RegistryStr()] = true
	}
	base, ok := remote.DefaultTransport.(*http.Transport)
	if !ok {
		base = http.DefaultTransport.(*http.Transport)
	}
	s.transport = base.Clone()

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	// Root filesystems hold setuid binaries owned by root: no one but
	// root may reach them on the host.
	for _, d := range []string{s.blobDir(), s.rootfsDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	for _, d := range []string{filepath.Join(dir, "blobs"), filepath.Join(dir, "rootfs"), s.tmpDir()} {
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	if err := s.cleanTmp(); err != nil {
		return nil, fmt.Errorf("image store: clearing %s: %w", s.tmpDir(), err)
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) blobDir() string   { return filepath.Join(s.dir, "blobs", "sha256") }
func (s *Store) rootfsDir() string { return filepath.Join(s.dir, "rootfs", "sha256") }
func (s *Store) tmpDir() string    { return filepath.Join(s.dir, "tmp") }

func (s *Store) blobPath(digest string) string {
	return filepath.Join(s.blobDir(), strings.TrimPrefix(digest, "sha256:"))
}

func (s *Store) rootfsPath(digest string) string {
	return filepath.Join(s.rootfsDir(), strings.TrimPrefix(digest, "sha256:"))
}

func (s *Store) cleanTmp() error {
	ents, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := removeAll(filepath.Join(s.tmpDir(), e.Name())); err != nil {
			return err
		}
	}
	stale, _ := filepath.Glob(filepath.Join(s.dir, indexFile+".*.tmp"))
	for _, f := range stale {
		os.Remove(f)
	}
	return nil
}

func (s *Store) load() error {
	s.idx = &index{Version: 1, Names: map[string]string{}, Images: map[string]*record{}, Aliases: map[string]string{}}
	b, err := os.ReadFile(filepath.Join(s.dir, indexFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	if err := json.Unmarshal(b, s.idx); err != nil {
		return fmt.Errorf("image store: %s: %w", filepath.Join(s.dir, indexFile), err)
	}
	if s.idx.Names == nil {
		s.idx.Names = map[string]string{}
	}
	if s.idx.Images == nil {
		s.idx.Images = map[string]*record{}
	}
	if s.idx.Aliases == nil {
		s.idx.Aliases = map[string]string{}
	}
	changed := false
	for d, r := range s.idx.Images {
		if _, err := os.Lstat(s.rootfsPath(d)); r == nil || !validDigest(d) || err != nil {
			delete(s.idx.Images, d)
			changed = true
		}
	}
	changed = s.dropDangling() || changed
	if changed {
		return s.save()
	}
	return nil
}

// dropDangling removes names and aliases of images no longer in the index.
func (s *Store) dropDangling() bool {
	changed := false
	for n, d := range s.idx.Names {
		if s.idx.Images[d] == nil {
			delete(s.idx.Names, n)
			changed = true
		}
	}
	for a, d := range s.idx.Aliases {
		if s.idx.Images[d] == nil {
			delete(s.idx.Aliases, a)
			changed = true
		}
	}
	return changed
}

// save writes index.json crash-safely: a synced temporary file renamed over
// the old one, then the directory synced. Callers hold s.mu.
func (s *Store) save() error {
	b, err := json.MarshalIndent(s.idx, "", "\t")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(s.dir, indexFile+".*.tmp")
	if err != nil {
		return fmt.Errorf("image store: writing index: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(s.dir, indexFile))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("image store: writing index: %w", err)
	}
	return syncDir(s.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func validDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil && strings.ToLower(h) == h
}

// image builds the Image for digest d known as n. Callers hold s.mu.
func (s *Store) image(n, d string) (Image, bool) {
	r := s.idx.Images[d]
	if r == nil {
		return Image{}, false
	}
	if n == "" {
		n = s.firstName(d)
	}
	cfg := r.Config
	cfg.Entrypoint = slices.Clone(cfg.Entrypoint)
	cfg.Cmd = slices.Clone(cfg.Cmd)
	cfg.Env = slices.Clone(cfg.Env)
	return Image{Name: n, Digest: d, Config: cfg, Rootfs: s.rootfsPath(d), Size: r.Size, Skipped: r.Skipped}, true
}

func (s *Store) firstName(d string) string {
	var names []string
	for n, nd := range s.idx.Names {
		if nd == d {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return d
	}
	sort.Strings(names)
	return names[0]
}

// resolveDigest maps a manifest or index digest to a manifest digest present
// in the store. Callers hold s.mu.
func (s *Store) resolveDigest(d string) (string, bool) {
	if s.idx.Images[d] != nil {
		return d, true
	}
	if m, ok := s.idx.Aliases[d]; ok && s.idx.Images[m] != nil {
		return m, true
	}
	return "", false
}

// lookup finds an image by normalized name n, or by the digest of n when n
// is a digest reference. Callers hold s.mu.
func (s *Store) lookup(n string, ref name.Reference) (Image, bool) {
	if d, ok := s.idx.Names[n]; ok {
		return s.image(n, d)
	}
	if dg, ok := ref.(name.Digest); ok {
		if d, ok := s.resolveDigest(dg.DigestStr()); ok {
			return s.image(n, d)
		}
	}
	return Image{}, false
}

// Get finds an image in the store, without any network access: by name
// ("busybox:1", "docker.io/library/busybox:1"), by name and digest, or by
// bare manifest digest ("sha256:...").
func (s *Store) Get(ref string) (Image, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if validDigest(ref) {
		d, ok := s.resolveDigest(ref)
		if !ok {
			return Image{}, false
		}
		return s.image("", d)
	}
	r, err := parseRef(ref)
	if err != nil {
		return Image{}, false
	}
	return s.lookup(normalize(r), r)
}

// List returns every name in the store, sorted, and images known under no
// name by their digest.
func (s *Store) List() []Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Image
	named := map[string]bool{}
	for n, d := range s.idx.Names {
		if img, ok := s.image(n, d); ok {
			out = append(out, img)
			named[d] = true
		}
	}
	for d := range s.idx.Images {
		if !named[d] {
			img, _ := s.image(d, d)
			out = append(out, img)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// GC removes the unpacked root filesystems and blobs of every image not
// reachable from roots (names or digests, as Get takes them), and the names
// of those images. Images in use must be passed as roots by the caller. It
// returns what it removed: "name REF", "rootfs sha256:..." and
// "blob sha256:..." entries. An unparsable root is an error and nothing is
// removed; a root the store does not hold is ignored.
func (s *Store) GC(roots []string) ([]string, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()

	keep := map[string]bool{}
	for _, root := range roots {
		var d string
		var ok bool
		if validDigest(root) {
			d, ok = s.resolveDigest(root)
		} else {
			r, err := parseRef(root)
			if err != nil {
				return nil, fmt.Errorf("gc: root %q: %v", root, err)
			}
			var img Image
			img, ok = s.lookup(normalize(r), r)
			d = img.Digest
		}
		if ok {
			keep[d] = true
		}
	}
	keepBlobs := map[string]bool{}
	for d := range keep {
		for _, b := range s.idx.Images[d].Blobs {
			keepBlobs[b] = true
		}
	}

	var removed []string
	for n, d := range s.idx.Names {
		if !keep[d] {
			delete(s.idx.Names, n)
			removed = append(removed, "name "+n)
		}
	}
	for d := range s.idx.Images {
		if !keep[d] {
			delete(s.idx.Images, d)
		}
	}
	s.dropDangling()
	// The index goes first: it must never point at removed content.
	if err := s.save(); err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}

	var errs []error
	ents, err := os.ReadDir(s.rootfsDir())
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range ents {
		d := "sha256:" + e.Name()
		if keep[d] {
			continue
		}
		// Rename first, so a half-removed tree never looks complete.
		trash, err := os.MkdirTemp(s.tmpDir(), "gc-")
		if err == nil {
			err = os.Rename(filepath.Join(s.rootfsDir(), e.Name()), filepath.Join(trash, "rootfs"))
		}
		if err == nil {
			err = removeAll(trash)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "rootfs "+d)
	}
	ents, err = os.ReadDir(s.blobDir())
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range ents {
		d := "sha256:" + e.Name()
		if keepBlobs[d] {
			continue
		}
		if err := os.Remove(filepath.Join(s.blobDir(), e.Name())); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "blob "+d)
	}
	if err := syncDir(s.blobDir()); err != nil {
		errs = append(errs, err)
	}
	sort.Strings(removed)
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("gc: %w", err)
	}
	return removed, nil
}

// removeAll removes a tree, making directories writable first if the
// plain attempt fails (images contain read-only directories; as root that
// never matters).
func removeAll(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(path, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// opError is the error of a store operation: "pull REF: reason".
type opError struct {
	op, ref, msg string
	err          error
}

func (e *opError) Error() string { return e.op + " " + e.ref + ": " + e.msg }
func (e *opError) Unwrap() error { return e.err }

func errorf(op, ref string, err error, format string, args ...any) error {
	return &opError{op: op, ref: ref, msg: fmt.Sprintf(format, args...), err: err}
}

func wrap(op, ref string, err error) error {
	var oe *opError
	if errors.As(err, &oe) {
		return err
	}
	return &opError{op: op, ref: ref, msg: oneLine(err.Error()), err: err}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// source is one image to bring into the store.
type source struct {
	img   v1.Image
	names []string // normalized
	alias string   // digest of the index img was picked from, if any
}

// ingest stores src: blobs, unpacked rootfs, index entry. Callers hold
// s.gcMu shared.
func (s *Store) ingest(ctx context.Context, src source) ([]Image, error) {
	dh, err := src.img.Digest()
	if err != nil {
		return nil, err
	}
	d := dh.String()
	v, err := s.flights.do("image "+d, func() (any, error) {
		s.mu.Lock()
		r := s.idx.Images[d]
		s.mu.Unlock()
		if r != nil {
			return r, nil
		}
		return s.fetchAndUnpack(ctx, src.img, d)
	})
	if err != nil {
		return nil, err
	}
	r := v.(*record)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idx.Images[d] = r
	for _, n := range src.names {
		s.idx.Names[n] = d
	}
	if src.alias != "" && src.alias != d {
		s.idx.Aliases[src.alias] = d
	}
	if err := s.save(); err != nil {
		return nil, err
	}
	var out []Image
	for _, n := range src.names {
		img, _ := s.image(n, d)
		out = append(out, img)
	}
	if len(out) == 0 {
		img, _ := s.image(d, d)
		out = append(out, img)
	}
	return out, nil
}

// linuxPlatform is the platform this node runs.
func wantPlatform() v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	switch runtime.GOARCH {
	case "arm64":
		p.Variant = "v8"
	case "arm":
		p.Variant = "v7"
	}
	return p
}

func (s *Store) fetchAndUnpack(ctx context.Context, img v1.Image, d string) (*record, error) {
	mt, err := img.MediaType()
	if err != nil {
		return nil, err
	}
	if !mt.IsImage() || mt.IsSchema1() {
		return nil, fmt.Errorf("unsupported manifest media type %q", mt)
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	manifest, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	if !manifest.Config.MediaType.IsConfig() && manifest.Config.MediaType != "" {
		return nil, fmt.Errorf("not a container image: config media type %q", manifest.Config.MediaType)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg, err := v1.ParseConfigFile(strings.NewReader(string(rawConfig)))
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	want := wantPlatform()
	if (cfg.OS != "" && cfg.OS != want.OS) || (cfg.Architecture != "" && cfg.Architecture != want.Architecture) {
		return nil, fmt.Errorf("image is for %s/%s, this node is %s/%s", cfg.OS, cfg.Architecture, want.OS, want.Architecture)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("reading layers: %w", err)
	}
	if len(layers) != len(cfg.RootFS.DiffIDs) {
		return nil, fmt.Errorf("manifest has %d layers, config %d diff IDs", len(layers), len(cfg.RootFS.DiffIDs))
	}
	var declared int64
	for _, l := range manifest.Layers {
		declared += l.Size
	}
	// Compressed layers are (nearly) never larger than what they unpack
	// to; refuse before downloading what could not be unpacked anyway.
	if declared > s.max+s.max/64+1<<20 {
		return nil, fmt.Errorf("%w (%d bytes): layers alone are %d bytes", errTooLarge, s.max, declared)
	}

	if err := s.writeBlob(d, strings.NewReader(string(rawManifest)), int64(len(rawManifest))); err != nil {
		return nil, fmt.Errorf("storing manifest: %w", err)
	}
	if err := s.writeBlob(cfgName.String(), strings.NewReader(string(rawConfig)), int64(len(rawConfig))); err != nil {
		return nil, fmt.Errorf("storing config: %w", err)
	}
	rec := &record{Blobs: []string{d, cfgName.String()}}
	var blobs []*blobLayer
	for i, l := range layers {
		lmt, err := l.MediaType()
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if !lmt.IsLayer() {
			return nil, fmt.Errorf("layer %d: media type %q is not a filesystem layer", i, lmt)
		}
		ld, err := l.Digest()
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		size, err := l.Size()
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		_, err = s.flights.do("blob "+ld.String(), func() (any, error) {
			if _, err := os.Stat(s.blobPath(ld.String())); err == nil {
				return nil, nil
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			rc, err := l.Compressed()
			if err != nil {
				return nil, err
			}
			defer rc.Close()
			return nil, s.writeBlob(ld.String(), rc, size)
		})
		if err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, ld, err)
		}
		rec.Blobs = append(rec.Blobs, ld.String())
		blobs = append(blobs, &blobLayer{path: s.blobPath(ld.String()), digest: ld, size: size, mediaType: lmt})
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	size, skipped, err := s.unpack(d, blobs, cfg.RootFS.DiffIDs)
	if err != nil {
		return nil, err
	}
	rec.Size, rec.Skipped = size, skipped
	rec.Config = Config{
		Entrypoint: cfg.Config.Entrypoint,
		Cmd:        cfg.Config.Cmd,
		Env:        cfg.Config.Env,
		WorkingDir: cfg.Config.WorkingDir,
		User:       cfg.Config.User,
	}
	return rec, nil
}

// writeBlob stores r under digest d, verifying it. A blob already present was
// verified when it was written and is kept.
func (s *Store) writeBlob(d string, r io.Reader, size int64) error {
	if !validDigest(d) {
		return fmt.Errorf("unsupported digest %q", d)
	}
	final := s.blobPath(d)
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	f, err := os.CreateTemp(s.tmpDir(), "blob-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, size+1))
	if err == nil && n != size {
		err = fmt.Errorf("size %d, expected %d", n, size)
	}
	if err == nil {
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d {
			err = fmt.Errorf("content has digest %s", got)
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), final)
	}
	if err == nil {
		err = syncDir(s.blobDir())
	}
	return err
}

// blobLayer is a layer stored in the blob directory.
type blobLayer struct {
	path      string
	digest    v1.Hash
	size      int64
	mediaType types.MediaType
}

func (b *blobLayer) Digest() (v1.Hash, error)            { return b.digest, nil }
func (b *blobLayer) Compressed() (io.ReadCloser, error)  { return os.Open(b.path) }
func (b *blobLayer) Size() (int64, error)                { return b.size, nil }
func (b *blobLayer) MediaType() (types.MediaType, error) { return b.mediaType, nil }

// unpack builds the root filesystem of manifest d from its stored layers in
// a temporary directory and renames it into place.
func (s *Store) unpack(d string, layers []*blobLayer, diffIDs []v1.Hash) (size int64, skipped int, err error) {
	final := s.rootfsPath(d)
	if _, err := os.Lstat(final); err == nil {
		// Left by a crash between rename and index write: redo it, it
		// is the simplest way to know its size.
		trash, err := os.MkdirTemp(s.tmpDir(), "stale-")
		if err != nil {
			return 0, 0, err
		}
		if err := os.Rename(final, filepath.Join(trash, "rootfs")); err != nil {
			return 0, 0, err
		}
		removeAll(trash)
	}
	tmp, err := os.MkdirTemp(s.tmpDir(), "unpack-")
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if err != nil {
			removeAll(tmp)
		}
	}()
	rootfs := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(rootfs, 0o700); err != nil {
		return 0, 0, err
	}
	a, err := newApplier(rootfs, s.max)
	if err != nil {
		return 0, 0, err
	}
	defer a.Close()
	for i, bl := range layers {
		if err := applyBlob(a, bl, diffIDs[i]); err != nil {
			return 0, 0, fmt.Errorf("layer %d (%s): %w", i, bl.digest, err)
		}
	}
	if err := a.Sync(); err != nil {
		return 0, 0, err
	}
	size = diskUsage(rootfs)
	if err := os.Rename(rootfs, final); err != nil {
		return 0, 0, err
	}
	if err := syncDir(s.rootfsDir()); err != nil {
		return 0, 0, err
	}
	removeAll(tmp)
	return size, a.skipped, nil
}

func applyBlob(a *applier, bl *blobLayer, diffID v1.Hash) error {
	l, err := partial.CompressedToLayer(bl)
	if err != nil {
		return err
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	if err := a.Apply(io.TeeReader(rc, h)); err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID.String() {
		return fmt.Errorf("uncompressed content is %s, config says %s", got, diffID)
	}
	return nil
}

// diskUsage sums the sizes of the regular files under root, counting
// hardlinked files once.
func diskUsage(root string) int64 {
	var total int64
	seen := map[[2]uint64]bool{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			k := [2]uint64{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		total += info.Size()
		return nil
	})
	return total
}

// flightGroup runs one call per key at a time; callers arriving while it
// runs share its result.
type flightGroup struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done chan struct{}
	val  any
	err  error
}

func (g *flightGroup) do(key string, fn func() (any, error)) (any, error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*flight{}
	}
	if f, ok := g.m[key]; ok {
		g.mu.Unlock()
		<-f.done
		return f.val, f.err
	}
	f := &flight{done: make(chan struct{})}
	g.m[key] = f
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.m, key)
		g.mu.Unlock()
		close(f.done)
	}()
	f.val, f.err = fn()
	return f.val, f.err
}
