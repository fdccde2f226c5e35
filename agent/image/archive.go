package image

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Import brings the images of an archive into the store: an OCI image
// layout (a directory, or a tar of one, possibly gzipped) or a `docker save`
// tar (possibly gzipped). Images are named after the archive's own
// references (RepoTags; the io.containerd.image.name or
// org.opencontainers.image.ref.name annotations); name overrides them and
// is only valid when the archive holds one image. An image without a name
// when no name is given is an error. Multi-platform indexes in a layout
// contribute their linux/GOARCH image. It returns one Image per name.
func (s *Store) Import(ctx context.Context, path, name string) ([]Image, error) {
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	imgs, err := s.importArchive(ctx, path, name)
	if err != nil {
		return nil, wrap("import", path, err)
	}
	return imgs, nil
}

func (s *Store) importArchive(ctx context.Context, p, override string) ([]Image, error) {
	if override != "" {
		r, err := parseRef(override)
		if err != nil {
			return nil, fmt.Errorf("invalid --name %q: %v", override, err)
		}
		override = normalize(r)
	}
	work, err := os.MkdirTemp(s.tmpDir(), "import-")
	if err != nil {
		return nil, err
	}
	defer removeAll(work)

	srcs, err := s.readArchive(p, work)
	if err != nil {
		return nil, err
	}
	if len(srcs) == 0 {
		return nil, errors.New("the archive holds no linux/" + wantPlatform().Architecture + " image")
	}
	if override != "" {
		if len(srcs) != 1 {
			return nil, fmt.Errorf("--name can only be used when the archive holds one image; it holds %d", len(srcs))
		}
		srcs[0].names = []string{override}
	}
	for _, src := range srcs {
		if len(src.names) == 0 {
			if len(srcs) == 1 {
				return nil, errors.New("the archive does not name its image; pass --name")
			}
			return nil, errors.New("the archive holds an image without a name, and --name can only name an archive's only image")
		}
	}
	var out []Image
	for _, src := range srcs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		imgs, err := s.ingest(ctx, src)
		if err != nil {
			return nil, err
		}
		out = append(out, imgs...)
	}
	return out, nil
}

// readArchive opens the archive at p; work is a scratch directory that lives
// as long as the returned images are used.
func (s *Store) readArchive(p, work string) ([]source, error) {
	st, err := os.Stat(p)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, pe.Err // the path is already in the message
		}
		return nil, err
	}
	if st.IsDir() {
		if _, err := os.Stat(filepath.Join(p, "index.json")); err != nil {
			return nil, errors.New("not an OCI image layout: no index.json")
		}
		return layoutSources(p)
	}
	file := p
	gz, err := isGzip(p)
	if err != nil {
		return nil, err
	}
	if gz {
		file = filepath.Join(work, "archive.tar")
		if err := gunzip(p, file, 4*s.max); err != nil {
			return nil, err
		}
	}
	entries, err := scanTar(file)
	if err != nil {
		return nil, err
	}
	switch {
	case entries["manifest.json"]:
		return dockerSources(file)
	case entries["index.json"] && entries["oci-layout"]:
		dir := filepath.Join(work, "layout")
		if err := extractLayout(file, dir); err != nil {
			return nil, err
		}
		return layoutSources(dir)
	default:
		return nil, errors.New("not a docker save archive (no manifest.json) nor an OCI image layout (no index.json and oci-layout)")
	}
}

func isGzip(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	magic := make([]byte, 2)
	n, _ := io.ReadFull(f, magic)
	return n == 2 && magic[0] == 0x1f && magic[1] == 0x8b, nil
}

func gunzip(src, dst string, limit int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	zr, err := gzip.NewReader(bufio.NewReader(in))
	if err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	n, err := io.Copy(out, io.LimitReader(zr, limit+1))
	if err != nil {
		return fmt.Errorf("decompressing: %w", err)
	}
	if n > limit {
		return fmt.Errorf("decompressing: more than %d bytes", limit)
	}
	return out.Close()
}

// scanTar lists the entries of a tar and refuses link loops, which
// go-containerregistry's tarball reader would follow forever.
func scanTar(file string) (map[string]bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names := map[string]bool{}
	first := map[string]bool{}
	links := map[string]string{}
	tr := tar.NewReader(bufio.NewReader(f))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading tar: %w", err)
		}
		names[path.Clean(hdr.Name)] = true
		if _, dup := first[hdr.Name]; dup {
			continue // readers use the first entry of a name
		}
		first[hdr.Name] = true
		if hdr.Typeflag == tar.TypeSymlink || hdr.Typeflag == tar.TypeLink {
			links[hdr.Name] = path.Join(path.Dir(hdr.Name), path.Clean(hdr.Linkname))
		}
	}
	for start := range links {
		n, hops := start, 0
		for {
			next, ok := links[n]
			if !ok {
				break
			}
			if hops++; hops > 32 {
				return nil, fmt.Errorf("link loop at %q in the archive", start)
			}
			n = next
		}
	}
	return names, nil
}

var layoutBlob = regexp.MustCompile(`^blobs/[a-z0-9]+/[a-f0-9]+$`)

// extractLayout extracts the OCI layout parts of a tar (oci-layout,
// index.json, blobs/ALG/HEX; regular files only) into the new directory dir.
func extractLayout(file, dir string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	tr := tar.NewReader(bufio.NewReader(f))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tar: %w", err)
		}
		rel := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		if hdr.Typeflag != tar.TypeReg || (rel != "oci-layout" && rel != "index.json" && !layoutBlob.MatchString(rel)) {
			continue
		}
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}

// refName is the image name an OCI descriptor's annotations give, if any.
// org.opencontainers.image.ref.name is often only a tag ("1"); that is no
// name.
func refName(ann map[string]string) string {
	for _, k := range []string{"io.containerd.image.name", "org.opencontainers.image.ref.name"} {
		v := ann[k]
		if v == "" || !strings.ContainsAny(v, "/:@") {
			continue
		}
		if r, err := parseRef(v); err == nil {
			return normalize(r)
		}
	}
	return ""
}

func layoutSources(dir string) ([]source, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("reading OCI layout: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading OCI layout: %w", err)
	}
	want := wantPlatform()
	var srcs []source
	byDigest := map[string]int{}
	for _, desc := range im.Manifests {
		var src source
		switch {
		case desc.MediaType.IsIndex():
			child, err := idx.ImageIndex(desc.Digest)
			if err != nil {
				return nil, fmt.Errorf("reading OCI layout: %w", err)
			}
			cim, err := child.IndexManifest()
			if err != nil {
				return nil, fmt.Errorf("reading OCI layout: %w", err)
			}
			pick, err := pickPlatform(cim)
			if err != nil {
				return nil, err
			}
			if src.img, err = child.Image(pick.Digest); err != nil {
				return nil, fmt.Errorf("reading OCI layout: %w", err)
			}
			src.alias = desc.Digest.String()
		case desc.MediaType.IsImage():
			if p := desc.Platform; p != nil && (p.OS != want.OS || p.Architecture != want.Architecture) {
				continue
			}
			if src.img, err = idx.Image(desc.Digest); err != nil {
				return nil, fmt.Errorf("reading OCI layout: %w", err)
			}
		default:
			continue // artifacts, signatures
		}
		if n := refName(desc.Annotations); n != "" {
			src.names = []string{n}
		}
		d, err := src.img.Digest()
		if err != nil {
			return nil, err
		}
		if i, ok := byDigest[d.String()]; ok {
			srcs[i].names = append(srcs[i].names, src.names...)
			continue
		}
		byDigest[d.String()] = len(srcs)
		srcs = append(srcs, src)
	}
	return srcs, nil
}

func dockerSources(file string) ([]source, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(file) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("reading manifest.json: %w", err)
	}
	var srcs []source
	for i, desc := range m {
		var src source
		var tag *name.Tag
		for _, rt := range desc.RepoTags {
			t, err := name.NewTag(rt)
			if err != nil {
				return nil, fmt.Errorf("manifest.json: image %d: bad RepoTag %q: %v", i, rt, err)
			}
			if tag == nil {
				tag = &t
			}
			src.names = append(src.names, normalize(t))
		}
		if len(m) > 1 && tag == nil {
			return nil, fmt.Errorf("manifest.json: image %d has no RepoTags; an archive of several images must name them all", i)
		}
		if len(m) == 1 {
			tag = nil
		}
		img, err := tarball.Image(opener, tag)
		if err != nil {
			return nil, fmt.Errorf("reading image %d: %w", i, err)
		}
		src.img = img
		srcs = append(srcs, src)
	}
	return srcs, nil
}
