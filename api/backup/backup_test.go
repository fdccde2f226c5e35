package backup

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sample(t *testing.T) (Manifest, []byte, []byte) {
	t.Helper()
	db := bytes.Repeat([]byte("etcd page "), 700)
	sum := sha256.Sum256(db)
	m := Manifest{Format: Format, Created: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), SkiffVersion: "test",
		CAHash: "sha256:00", EtcdRevision: 42, SnapshotSize: int64(len(db)), SnapshotSHA256: hex.EncodeToString(sum[:]),
		Objects: map[string]int{"Pod": 3}, Revisions: 9}
	var file bytes.Buffer
	if err := Write(&file, m, bytes.NewReader(db)); err != nil {
		t.Fatal(err)
	}
	return m, db, file.Bytes()
}

func TestRoundTrip(t *testing.T) {
	m, db, file := sample(t)
	got, r, err := Read(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Errorf("manifest read back:\n got  %+v\n want %+v", got, m)
	}
	b, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(b, db) {
		t.Errorf("snapshot read back: %d bytes, %v; want %d bytes", len(b), err, len(db))
	}
	// The file is a plain tar of the two files.
	tr := tar.NewReader(bytes.NewReader(file))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	if !reflect.DeepEqual(names, []string{"manifest.json", "etcd.db"}) {
		t.Errorf("tar entries %v", names)
	}
}

// A damaged file is refused, with ErrDamaged and a reason, by the time
// its snapshot has been read to the end.
func TestDamaged(t *testing.T) {
	m, db, file := sample(t)
	dbAt := bytes.Index(file, db[:64])
	flipped := bytes.Clone(file)
	flipped[dbAt+len(db)/2] ^= 1
	otherSum := m
	otherSum.SnapshotSHA256 = strings.Repeat("0", 64)
	var wrongSum bytes.Buffer
	Write(&wrongSum, otherSum, bytes.NewReader(db))
	for name, tt := range map[string]struct {
		file []byte
		want string
	}{
		"flipped byte in the snapshot": {flipped, "sha256 checksum"},
		"manifest with another sum":    {wrongSum.Bytes(), "sha256 checksum"},
		"cut in the snapshot":          {file[:dbAt+100], "cut short"},
		"cut before the snapshot":      {file[:dbAt-512], "no etcd.db"},
		"not a tar":                    {[]byte("hello, this is not a backup"), "not a skiff backup"},
		"empty":                        {nil, "no manifest.json"},
	} {
		_, r, err := Read(bytes.NewReader(tt.file))
		if err == nil {
			_, err = io.Copy(io.Discard, r)
		}
		if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrDamaged saying %q", name, err, tt.want)
		}
	}
}

func TestOtherFormatRefused(t *testing.T) {
	m, db, _ := sample(t)
	m.Format = "skiff-backup/9"
	var file bytes.Buffer
	if err := Write(&file, m, bytes.NewReader(db)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Read(&file); err == nil || !strings.Contains(err.Error(), `format "skiff-backup/9"`) {
		t.Errorf("a backup of another format: %v", err)
	}
}
